#!/bin/bash
# A RabbitMQ broker for the notification tests, on a machine without systemd.
#
# Idempotent: when the broker answers and the test user may use the test
# vhost, it only prints the transport URL (one rabbitmqctl call, about 1.5 s).
# Otherwise it starts Debian's rabbitmq-server as a daemon (it runs as the
# rabbitmq user; AMQP on 127.0.0.1 only), waits (bounded) until it answers,
# and creates the vhost and the user. The broker's own files stay the
# package's (/etc/rabbitmq is left alone); its log is /var/log/rabbitmq/.
#
# Usage: tools/start-rabbitmq.sh        (as root)
# Prints on stdout: the transport URL, rabbit://USER:PASSWORD@127.0.0.1:5672/VHOST
# Env:   RABBITMQ_WAIT_SECONDS (default 60)
#        NOVA_BALLOON_RABBIT_VHOST (default nova_balloon_tests)
#        NOVA_BALLOON_RABBIT_USER, NOVA_BALLOON_RABBIT_PASSWORD (default nova_balloon)
set -euo pipefail

WAIT_SECONDS="${RABBITMQ_WAIT_SECONDS:-60}"
VHOST="${NOVA_BALLOON_RABBIT_VHOST:-nova_balloon_tests}"
RABBIT_USER="${NOVA_BALLOON_RABBIT_USER:-nova_balloon}"
PASSWORD="${NOVA_BALLOON_RABBIT_PASSWORD:-nova_balloon}"
ADDRESS=127.0.0.1
PORT=5672
PID_FILE=/var/lib/rabbitmq/nova-balloon-tests.pid
URL="rabbit://$RABBIT_USER:$PASSWORD@$ADDRESS:$PORT/$VHOST"

log() { printf 'start-rabbitmq: %s\n' "$*" >&2; }

set_up() {
    rabbitmqctl -q --no-table-headers list_user_permissions "$RABBIT_USER" 2>/dev/null |
        awk -v vhost="$VHOST" '$1 == vhost { found = 1 } END { exit !found }'
}

if set_up; then
    log "broker answers on $ADDRESS:$PORT, vhost $VHOST ready"
    echo "$URL"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    log "ERROR: the broker is not set up and setting it up needs root"
    exit 1
fi
for tool in rabbitmq-server rabbitmqctl rabbitmq-diagnostics; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "ERROR: '$tool' not found (install rabbitmq-server)"
        exit 1
    fi
done

if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    log "starting rabbitmq-server on $ADDRESS:$PORT"
    mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
    chown rabbitmq:rabbitmq /var/log/rabbitmq /var/lib/rabbitmq
    rm -f "$PID_FILE"
    RABBITMQ_NODE_IP_ADDRESS="$ADDRESS" RABBITMQ_NODE_PORT="$PORT" \
        RABBITMQ_PID_FILE="$PID_FILE" rabbitmq-server -detached
    # Waits for the pid file, then for the broker to boot.
    if ! rabbitmqctl -q --timeout "$WAIT_SECONDS" wait "$PID_FILE" >/dev/null 2>&1; then
        log "ERROR: rabbitmq-server not ready within ${WAIT_SECONDS}s; last lines of its log:"
        tail -n 20 /var/log/rabbitmq/*.log >&2 || true
        exit 1
    fi
fi

log "creating vhost $VHOST and user $RABBIT_USER"
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
if ! rabbitmqctl -q --no-table-headers list_users | awk -v user="$RABBIT_USER" \
        '$1 == user { found = 1 } END { exit !found }'; then
    rabbitmqctl -q add_user "$RABBIT_USER" "$PASSWORD" >/dev/null
fi
rabbitmqctl -q set_permissions -p "$VHOST" "$RABBIT_USER" '.*' '.*' '.*' >/dev/null
log "broker ready: AMQP on $ADDRESS:$PORT, vhost $VHOST"
echo "$URL"
