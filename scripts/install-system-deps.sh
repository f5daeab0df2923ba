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

"$(dirname "$0")/apt-install.sh" "${missing[@]}"
