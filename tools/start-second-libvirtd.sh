#!/bin/bash
# A second libvirt daemon on this machine, the destination of real live
# migrations in tests/functional/test_migration.py.
#
# libvirt migrates between two daemons; a test machine has one host, so the
# second daemon runs in a private mount namespace with its own /etc/libvirt
# (a copy of the main daemon's, see tools/start-libvirtd.sh, with another
# host_uuid: libvirt refuses to migrate to a host with its own UUID),
# /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt.
# It places its guests in no cgroup (both daemons would name the same cgroup
# for the migrating domain) and listens on TCP 127.0.0.1:PORT without
# authentication (tests only).  The network namespace is shared, so QEMU
# migrates over 127.0.0.1.
#
# Its daemons run under other process names (nb-libvirtd2, nb-virtlogd2), so
# that `pgrep -x libvirtd` in tools/start-libvirtd.sh and `pkill -x libvirtd`
# in tools/soak.py see only the main daemon.
#
# Usage: tools/start-second-libvirtd.sh start   (as root; prints the URI)
#        tools/start-second-libvirtd.sh stop    (destroys its guests first)
# Both are idempotent.
# Env:   NOVA_BALLOON_SECOND_LIBVIRTD_DIR  (default /var/lib/nova-balloon-tests/second-libvirtd)
#        NOVA_BALLOON_SECOND_LIBVIRTD_PORT (default 16510)
#        NOVA_BALLOON_LIBVIRT_CONF_DIR     (the main daemon's /etc/libvirt copy)
set -euo pipefail

DIR="${NOVA_BALLOON_SECOND_LIBVIRTD_DIR:-/var/lib/nova-balloon-tests/second-libvirtd}"
PORT="${NOVA_BALLOON_SECOND_LIBVIRTD_PORT:-16510}"
MAIN_CONF_DIR="${NOVA_BALLOON_LIBVIRT_CONF_DIR:-/var/lib/nova-balloon-tests/etc-libvirt}"
URI="qemu+tcp://127.0.0.1:$PORT/system"
WAIT_SECONDS=30

log() { printf 'start-second-libvirtd: %s\n' "$*" >&2; }

answers() {
    virsh -c "$URI" version >/dev/null 2>&1
}

running() { # pid file
    local pid
    pid=$(cat "$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

start() {
    if answers; then
        echo "$URI"
        return
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        log "ERROR: starting a libvirtd needs root"
        exit 1
    fi
    # A daemon that does not answer (half started, or its port taken) is
    # stopped first rather than left next to a new one.
    stop
    mkdir -p "$DIR"/{run,lib,cache,etc,log,bin}
    rm -rf "${DIR:?}/etc" "$DIR/run" && mkdir -p "$DIR/etc" "$DIR/run"
    # The main daemon's configuration (QEMU as root for the test guests), or
    # the machine's when the main daemon was started some other way.
    if [[ -d $MAIN_CONF_DIR ]]; then
        cp -a "$MAIN_CONF_DIR/." "$DIR/etc/"
    else
        cp -a /etc/libvirt/. "$DIR/etc/"
    fi
    cat >"$DIR/etc/libvirtd.conf" <<CONF
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
listen_tls = 0
listen_tcp = 1
tcp_port = "$PORT"
listen_addr = "127.0.0.1"
auth_tcp = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
CONF
    echo 'cgroup_controllers = [ ]' >>"$DIR/etc/qemu.conf"
    # The main daemon's probe of the QEMU binaries, valid for the same
    # binaries: without it the first start takes some 20 s to probe them.
    if [[ -d /var/cache/libvirt/qemu/capabilities && ! -d $DIR/cache/qemu ]]; then
        mkdir -p "$DIR/cache/qemu"
        cp -a /var/cache/libvirt/qemu/capabilities "$DIR/cache/qemu/"
    fi
    ln -sf "$(command -v libvirtd)" "$DIR/bin/nb-libvirtd2"
    ln -sf "$(command -v virtlogd)" "$DIR/bin/nb-virtlogd2"
    cat >"$DIR/inner.sh" <<INNER
#!/bin/bash
set -e
mount --bind "$DIR/run" /run/libvirt
mount --bind "$DIR/lib" /var/lib/libvirt
mount --bind "$DIR/cache" /var/cache/libvirt
mount --bind "$DIR/etc" /etc/libvirt
mount --bind "$DIR/log" /var/log/libvirt
"$DIR/bin/nb-virtlogd2" -d -p "$DIR/virtlogd.pid"
exec "$DIR/bin/nb-libvirtd2" --listen -p "$DIR/libvirtd.pid"
INNER
    chmod +x "$DIR/inner.sh"
    mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
    setsid unshare --mount --propagation private "$DIR/inner.sh" \
        </dev/null >"$DIR/daemon.log" 2>&1 &
    local deadline=$((SECONDS + WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        if answers; then
            echo "$URI"
            return
        fi
        sleep 0.5
    done
    log "ERROR: $URI not answering after ${WAIT_SECONDS}s; see $DIR/daemon.log and $DIR/log/libvirtd.log"
    tail -n 20 "$DIR/daemon.log" "$DIR/log/libvirtd.log" >&2 2>/dev/null || true
    exit 1
}

stop() {
    # Its guests' QEMU processes would outlive the daemon.
    if answers; then
        for dom in $(virsh -c "$URI" list --name 2>/dev/null); do
            virsh -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
        done
    fi
    for name in libvirtd virtlogd; do
        local pidfile="$DIR/$name.pid"
        if running "$pidfile"; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            for _ in $(seq 40); do
                running "$pidfile" || break
                sleep 0.25
            done
        fi
        rm -f "$pidfile"
    done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
