#!/usr/bin/env bash
# Installs the Debian packages named as arguments (the install scripts' shared
# step); says what to do instead when not root.
set -euo pipefail
(($# > 0)) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: $*; install them (apt-get install $*) or run as root" >&2
    exit 1
fi
echo "installing system packages: $*"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@"
