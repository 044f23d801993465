#!/bin/bash
# Install everything nova-balloon's tests and demo need on Debian 12, as root.
#
# Idempotent and quick when all is there: the Debian packages of bindep.txt,
# a virtualenv in .venv with the package and its test requirements, the tiny
# test guest (build/guest), a running libvirtd and a RabbitMQ broker.
#
# Usage: tools/install.sh
# Env:   PYTHON (default python3) makes the virtualenv
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'install: %s\n' "$*" >&2; }

# bindep.txt lines: "package [profiles]"; take the ones for dpkg platforms.
mapfile -t packages < <(awk '!/^[[:space:]]*(#|$)/ {
    if ($0 !~ /\[/ || $0 ~ /platform:dpkg/) print $1 }' bindep.txt)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # Never a prompt: a conffile already on disk keeps its content.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    log "creating the virtualenv .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
log "installing nova-balloon, its test and docs requirements into .venv"
.venv/bin/pip install -q --disable-pip-version-check \
    -r requirements.txt -r test-requirements.txt -r doc/requirements.txt -e .

bash tools/build-guest-image.sh "$REPO_ROOT/build/guest"
bash tools/start-libvirtd.sh
# A real Placement API on 127.0.0.1 for the Placement ratio mode's tests.
bash tools/start-placement.sh >/dev/null
bash tools/start-rabbitmq.sh
