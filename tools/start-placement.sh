#!/bin/bash
# A real OpenStack Placement API on 127.0.0.1 for the tests of the agent's
# Placement mode (tests/functional/test_placement.py).
#
# openstack-placement from the package index, in a virtualenv of its own (it
# pins its own oslo.* and SQLAlchemy, which must not mix with .venv), on
# SQLite, with auth_strategy = noauth2: a request carrying "X-Auth-Token:
# admin" is an admin's. Served by the standard library's WSGI server, one
# request at a time, which is all the tests need.
#
# Idempotent and quick when all is there: exits 0 at once when the endpoint
# already answers; installs the virtualenv only once (about a minute);
# creates or upgrades the database schema at every start.
# tools/install.sh calls it, so .ci/run has Placement running before pytest;
# the tests call it too, so a single test file runs on its own.
#
# Usage: tools/start-placement.sh        (prints the endpoint on stdout)
# Env:   NOVA_BALLOON_PLACEMENT_DIR (default /var/lib/nova-balloon-tests/placement)
#        NOVA_BALLOON_PLACEMENT_PORT (default 18779)
#        PLACEMENT_WAIT_SECONDS (default 30)
set -euo pipefail

DIR="${NOVA_BALLOON_PLACEMENT_DIR:-/var/lib/nova-balloon-tests/placement}"
PORT="${NOVA_BALLOON_PLACEMENT_PORT:-18779}"
WAIT_SECONDS="${PLACEMENT_WAIT_SECONDS:-30}"
ENDPOINT="http://127.0.0.1:$PORT"
# Placement 16.0.0 (2026.2) is the one the tests were written against.
REQUIREMENT='openstack-placement>=12.0.0'

log() { printf 'start-placement: %s\n' "$*" >&2; }

answers() {
    # The version document at / needs no token, as in a real deployment.
    python3 - "$ENDPOINT" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/", timeout=2) as response:
    assert json.load(response)["versions"][0]["id"] == "v1.0"
PY
}

if answers; then
    log "Placement already answers at $ENDPOINT"
    echo "$ENDPOINT"
    exit 0
fi

mkdir -p "$DIR"
if [[ ! -x $DIR/venv/bin/placement-manage ]]; then
    log "installing $REQUIREMENT into $DIR/venv"
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q --disable-pip-version-check "$REQUIREMENT"
fi

cat >"$DIR/placement.conf" <<CONF
[DEFAULT]
log_file = $DIR/placement.log
[api]
auth_strategy = noauth2
[placement_database]
connection = sqlite:///$DIR/placement.db
CONF

cat >"$DIR/serve.py" <<'PY'
"""Placement's WSGI application on 127.0.0.1, without an access log on stderr."""
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from placement import wsgi


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


make_server("127.0.0.1", int(sys.argv[1]), wsgi.init_application(),
            handler_class=QuietHandler).serve_forever()
PY

# placement.wsgi reads placement.conf from OS_PLACEMENT_CONFIG_DIR.
export OS_PLACEMENT_CONFIG_DIR="$DIR"
"$DIR/venv/bin/placement-manage" --config-file "$DIR/placement.conf" db sync

if [[ -f $DIR/placement.pid ]] && kill -0 "$(cat "$DIR/placement.pid")" 2>/dev/null; then
    log "a server (pid $(cat "$DIR/placement.pid")) runs but does not answer: stopping it"
    kill "$(cat "$DIR/placement.pid")"
    sleep 1
fi
log "serving Placement at $ENDPOINT (log: $DIR/serve.log)"
# Its own session: it outlives this script and the test run.
setsid "$DIR/venv/bin/python" "$DIR/serve.py" "$PORT" >"$DIR/serve.log" 2>&1 </dev/null &
echo $! >"$DIR/placement.pid"

for _ in $(seq $((WAIT_SECONDS * 2))); do
    if answers; then
        echo "$ENDPOINT"
        exit 0
    fi
    sleep 0.5
done
log "ERROR: Placement did not answer at $ENDPOINT within $WAIT_SECONDS s; see $DIR/serve.log"
exit 1
