#!/bin/bash
# Make qemu:///system reachable on a machine without systemd (CI, dev boxes).
#
# Idempotent: exits 0 at once when virsh already answers.  Otherwise it
# prepares the directories and the QEMU driver config that the Debian
# libvirt-daemon-system package would normally provide, starts virtlogd and
# the monolithic libvirtd as daemons, and waits (bounded) for the socket.
#
# Usage: tools/start-libvirtd.sh        (as root)
# Env:   LIBVIRTD_WAIT_SECONDS (default 30)
set -euo pipefail

URI="qemu:///system"
WAIT_SECONDS="${LIBVIRTD_WAIT_SECONDS:-30}"
QEMU_CONF=/etc/libvirt/qemu.conf
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

for tool in virsh virtlogd libvirtd; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "ERROR: '$tool' not found (install libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients)"
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
# relabelling or permission juggling is needed.  Only done when qemu.conf
# has no user setting of its own.
if [[ ! -f "$QEMU_CONF" ]] || ! grep -Eq '^[[:space:]]*user[[:space:]]*=' "$QEMU_CONF"; then
    log "configuring QEMU to run as root in $QEMU_CONF"
    {
        echo '# Added by nova-balloon tools/start-libvirtd.sh for test guests.'
        echo 'user = "root"'
        echo 'group = "root"'
    } >>"$QEMU_CONF"
fi

if ! pgrep -x virtlogd >/dev/null 2>&1; then
    log "starting virtlogd"
    virtlogd -d
fi

if ! pgrep -x libvirtd >/dev/null 2>&1; then
    log "starting libvirtd"
    libvirtd -d
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
