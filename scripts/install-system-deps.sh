#!/usr/bin/env bash
# Installs the system packages the tests need, if they are missing:
# PostgreSQL 15 (server binaries), the zstd CLI, file(1) (checks the arm64
# bootstraps), and Python's venv module.
# Everything else (moto, cargo-lambda and npm packages) is installed
# by the Makefile into project-local directories.
set -euo pipefail

missing=()
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql-15)
command -v zstd >/dev/null || missing+=(zstd)
command -v runuser >/dev/null || missing+=(util-linux)
command -v file >/dev/null || missing+=(file)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
