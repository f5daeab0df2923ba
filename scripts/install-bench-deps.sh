#!/usr/bin/env bash
# Installs what `make bench` compares walvault against, if missing:
# - pgBackRest (Debian package; needs root),
# - barman-cloud from PyPI (barman 3.19.1 with boto3 and zstandard) in a venv
#   made with Debian's python (/usr/bin/python3), in .bench/venv,
# - s3s-fs 0.14.1 (S3 on the local disk, the fast S3 stand-in) from
#   crates.io, in .bench/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=.bench

missing=()
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
scripts/apt-install.sh "${missing[@]}"

if [[ ! -x $bench/venv/bin/barman-cloud-wal-archive ]]; then
    /usr/bin/python3 -m venv "$bench/venv"
    "$bench/venv/bin/pip" install --quiet --disable-pip-version-check 'barman[cloud,zstandard]==3.19.1'
fi

if [[ ! -x $bench/bin/s3s-fs ]]; then
    cargo install --locked --quiet s3s-fs@0.14.1 --features binary --root "$bench"
fi
