#!/bin/bash
# Make qemu:///system reachable on a machine without systemd (CI, dev boxes).
#
# Idempotent: exits 0 at once when virsh already answers.  Otherwise it
# prepares the directories and the system user that the Debian
# libvirt-daemon-system package would normally provide, starts virtlogd and
# the monolithic libvirtd as daemons, and waits (bounded) for the socket.
#
# The test guests need QEMU to run as root (see below), which only qemu.conf
# can say.  /etc/libvirt/qemu.conf belongs to libvirt-daemon-system (a
# conffile), so this script never writes it: libvirtd runs in a mount
# namespace of its own in which $CONF_DIR, a copy of /etc/libvirt with the
# QEMU user added to the copy of qemu.conf, is /etc/libvirt.  Everything else
# (sockets, /var/lib/libvirt, logs) is shared with the machine, and a later
# apt-get install of libvirt-daemon-system finds /etc/libvirt untouched.
# What the daemon writes under /etc/libvirt (nwfilters, secrets, persistent
# domains) lands in $CONF_DIR, which is refreshed from /etc/libvirt at each
# start.
#
# Usage: tools/start-libvirtd.sh        (as root)
# Env:   LIBVIRTD_WAIT_SECONDS (default 30)
#        NOVA_BALLOON_LIBVIRT_CONF_DIR (default /var/lib/nova-balloon-tests/etc-libvirt)
set -euo pipefail

URI="qemu:///system"
WAIT_SECONDS="${LIBVIRTD_WAIT_SECONDS:-30}"
CONF_DIR="${NOVA_BALLOON_LIBVIRT_CONF_DIR:-/var/lib/nova-balloon-tests/etc-libvirt}"
LOG_DIR=/var/log/libvirt

log() { printf 'start-libvirtd: %s\n' "$*" >&2; }

virsh_ok() {
    virsh -c "$URI" version >/dev/null 2>&1
}

if virsh_ok; then
    log "$URI already reachable"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    log "ERROR: $URI is not reachable and starting libvirtd needs root"
    exit 1
fi

for tool in virsh virtlogd libvirtd unshare mount; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "ERROR: '$tool' not found (install libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients, util-linux, mount)"
        exit 1
    fi
done

# Without libvirt-daemon-system nothing creates these, and both daemons
# refuse to start when they cannot open their log files.
mkdir -p "$LOG_DIR" /var/lib/libvirt /var/cache/libvirt /run/libvirt /etc/libvirt

# Debian builds libvirt with QEMU_USER/QEMU_GROUP = libvirt-qemu, which only
# libvirt-daemon-system creates.  The QEMU driver resolves that default
# before reading qemu.conf and refuses to initialise without it ("Failed to
# parse user 'libvirt-qemu'"), so create the system user/group as that
# package's postinst would.
if ! getent group libvirt-qemu >/dev/null 2>&1; then
    log "creating system group libvirt-qemu"
    groupadd --system libvirt-qemu
fi
if ! getent passwd libvirt-qemu >/dev/null 2>&1; then
    log "creating system user libvirt-qemu"
    useradd --system --gid libvirt-qemu --no-create-home \
        --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu
fi

# Test guests boot a kernel/initramfs from the work tree and bind their
# serial console socket in a root-only temp dir: run QEMU as root so no
# relabelling or permission juggling is needed.  Said in the copy of
# qemu.conf only, unless the machine's own qemu.conf sets a user already.
write_conf_dir() {
    mkdir -p "$CONF_DIR"
    chmod 0755 "$CONF_DIR"
    cp -a /etc/libvirt/. "$CONF_DIR/"
    if [[ -f /etc/libvirt/qemu.conf ]] &&
        grep -Eq '^[[:space:]]*user[[:space:]]*=' /etc/libvirt/qemu.conf; then
        return
    fi
    {
        cat /etc/libvirt/qemu.conf 2>/dev/null || true
        echo '# Added by nova-balloon tools/start-libvirtd.sh for test guests.'
        echo 'user = "root"'
        echo 'group = "root"'
    } >"$CONF_DIR/qemu.conf.new"
    mv "$CONF_DIR/qemu.conf.new" "$CONF_DIR/qemu.conf"
}

if ! pgrep -x virtlogd >/dev/null 2>&1; then
    log "starting virtlogd"
    virtlogd -d
fi

if ! pgrep -x libvirtd >/dev/null 2>&1; then
    write_conf_dir
    log "starting libvirtd with $CONF_DIR as its /etc/libvirt"
    # Slave propagation: mounts made on the machine later (hugetlbfs, say)
    # still reach libvirtd; its own /etc/libvirt stays its own.
    # shellcheck disable=SC2016  # $1 is the inner shell's: $CONF_DIR below
    unshare --mount --propagation slave \
        /bin/sh -c 'mount --bind "$1" /etc/libvirt && exec libvirtd -d' sh "$CONF_DIR"
fi

deadline=$((SECONDS + WAIT_SECONDS))
while ((SECONDS < deadline)); do
    if virsh_ok; then
        log "$URI reachable"
        exit 0
    fi
    sleep 0.5
done

log "ERROR: $URI still not reachable after ${WAIT_SECONDS}s"
if [[ -f "$LOG_DIR/libvirtd.log" ]]; then
    log "last lines of $LOG_DIR/libvirtd.log:"
    tail -n 20 "$LOG_DIR/libvirtd.log" >&2 || true
fi
virsh -c "$URI" version >&2 || true
exit 1
