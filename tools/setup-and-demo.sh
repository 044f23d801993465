#!/bin/bash
# Set everything up on a fresh Debian 12 machine (as root) and run the demo.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/install.sh
exec .venv/bin/python tools/demo.py "$@"
