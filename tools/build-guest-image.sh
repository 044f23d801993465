#!/bin/bash
# Build the tiny test guest used by the nova-balloon functional tests.
#
# Output (OUTDIR, default build/guest under the repo root):
#   vmlinuz         this machine's Debian cloud kernel
#   initramfs.img   gzip'd newc cpio: busybox-static, /init (tools/guest/init),
#                   the virtio balloon driver modules, memhog and memlow
#                   (tools/guest/memhog.c and memlow.c, static)
# The guest boots from kernel+initramfs only (rdinit=/init), needs no disk
# and no network, and is rebuilt only when an input changed.
#
# Usage: tools/build-guest-image.sh [OUTDIR]
# Env:   GUEST_KERNEL=/boot/vmlinuz-...   pick another kernel (its modules
#        must be in /lib/modules/<version>)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-$REPO_ROOT/build/guest}"
GUEST_SRC="$REPO_ROOT/tools/guest"
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
    virtio_pci virtio_balloon)

log() { printf 'build-guest-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in busybox cpio gzip gcc; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found"
done
BUSYBOX="$(command -v busybox)"
# The guest has no libc: busybox must be the static build.
"$BUSYBOX" --list 2>/dev/null | grep -qx insmod \
    || die "$BUSYBOX has no insmod applet (install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked (install busybox-static)"
fi

# Newest cloud kernel that has its modules installed.
if [[ -n "${GUEST_KERNEL:-}" ]]; then
    KERNEL="$GUEST_KERNEL"
else
    KERNEL=""
    while IFS= read -r candidate; do
        ver="${candidate#/boot/vmlinuz-}"
        if [[ -d "/lib/modules/$ver/kernel/drivers/virtio" ]]; then
            KERNEL="$candidate"
        fi
    done < <(find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' | sort -V)
fi
[[ -n "$KERNEL" && -r "$KERNEL" ]] \
    || die "no readable /boot/vmlinuz-*-cloud-amd64 with modules (install linux-image-cloud-amd64)"
KVER="${KERNEL#/boot/vmlinuz-}"
MODDIR="/lib/modules/$KVER/kernel/drivers/virtio"

MOD_FILES=()
for mod in "${MODULES[@]}"; do
    found=""
    for ext in ko ko.xz ko.zst ko.gz; do
        if [[ -f "$MODDIR/$mod.$ext" ]]; then
            found="$MODDIR/$mod.$ext"
            break
        fi
    done
    [[ -n "$found" ]] || die "module $mod not found in $MODDIR"
    MOD_FILES+=("$found")
done

INPUTS=("$KERNEL" "${MOD_FILES[@]}" "$BUSYBOX" "$GUEST_SRC/init"
    "$GUEST_SRC/memhog.c" "$GUEST_SRC/memlow.c" "$REPO_ROOT/tools/build-guest-image.sh")
VMLINUZ="$OUTDIR/vmlinuz"
INITRAMFS="$OUTDIR/initramfs.img"
MANIFEST="$OUTDIR/inputs.txt"

manifest() {
    local f
    for f in "${INPUTS[@]}"; do
        stat -L -c '%n %s %Y' "$f"
    done
}

# Up to date: same inputs as last time, and none newer than the outputs.
up_to_date() {
    local f
    [[ -f "$VMLINUZ" && -f "$INITRAMFS" && -f "$MANIFEST" ]] || return 1
    [[ "$(manifest)" == "$(cat "$MANIFEST")" ]] || return 1
    for f in "${INPUTS[@]}"; do
        [[ "$f" -nt "$VMLINUZ" || "$f" -nt "$INITRAMFS" ]] && return 1
    done
    return 0
}

if up_to_date; then
    log "up to date: $OUTDIR (kernel $KVER)"
    exit 0
fi

log "building guest image in $OUTDIR (kernel $KVER)"
mkdir -p "$OUTDIR"
WORK="$(mktemp -d "$OUTDIR/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,lib/modules}

install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
while IFS= read -r applet; do
    [[ -n "$applet" && "$applet" != busybox ]] || continue
    ln -sf busybox "$ROOT/bin/$applet"
done < <("$BUSYBOX" --list)

install -m 0755 "$GUEST_SRC/init" "$ROOT/init"

# Stored uncompressed: busybox insmod may lack xz/zstd support.
for i in "${!MODULES[@]}"; do
    src="${MOD_FILES[$i]}"
    dst="$ROOT/lib/modules/${MODULES[$i]}.ko"
    case "$src" in
        *.ko) cp "$src" "$dst" ;;
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
    esac
done

for tool in memhog memlow; do
    gcc -static -O2 -Wall -Wextra -o "$ROOT/bin/$tool" "$GUEST_SRC/$tool.c"
    strip "$ROOT/bin/$tool" 2>/dev/null || true
done

(
    cd "$ROOT"
    find . -mindepth 1 -print0 | LC_ALL=C sort -z \
        | cpio --quiet --null -o -H newc --owner=0:0 --reproducible
) | gzip -9n >"$WORK/initramfs.img"
cp "$KERNEL" "$WORK/vmlinuz"
chmod 0644 "$WORK/vmlinuz" "$WORK/initramfs.img"

mv -f "$WORK/vmlinuz" "$VMLINUZ"
mv -f "$WORK/initramfs.img" "$INITRAMFS"
manifest >"$MANIFEST"
log "done: $VMLINUZ $INITRAMFS ($(du -h "$INITRAMFS" | cut -f1))"
