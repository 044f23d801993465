#!/bin/bash
# The whole test suite: install what it needs, lint, then unit and
# functional tests (real libvirtd, real QEMU guests). Run as root.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/install.sh
.venv/bin/ruff check nova_balloon tests benchmarks
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
