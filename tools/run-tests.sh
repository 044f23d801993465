#!/bin/bash
# The whole test suite: install what it needs, lint (ruff, vermin), build the
# docs, then unit and functional tests (real libvirtd, real QEMU guests).
# Run as root.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash tools/install.sh
.venv/bin/ruff check nova_balloon tests benchmarks
# The package supports Python 3.10 (as Nova does); no 3.10 interpreter is
# installed here, so check the constructs it uses. Tests and tools run on 3.11.
.venv/bin/vermin -q -t=3.10- --no-tips --eval-annotations --violations nova_balloon
# The operator docs, as tox -e docs builds them: a warning is an error.
.venv/bin/sphinx-build -q -E -W --keep-going -b html -d doc/build/doctrees \
    doc/source doc/build/html
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
