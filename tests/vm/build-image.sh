#!/usr/bin/env bash
# Builds (once, cached) the VM suite's kernel and base initramfs from Debian packages:
#   - the kernel and the modules the suite needs (8021q, bridge, veth, virtio, nf_tables and
#     friends) from Debian's linux-image package, downloaded with `apt-get download` and
#     unpacked with `dpkg-deb` -- never installed as the host's kernel;
#   - busybox-static as the userland, plus `ip`, `nft` and `socat` from the host with the
#     shared libraries `ldd` lists (test witnesses and probes inside the VMs).
# Prints the cache directory holding `vmlinuz` (and `vmlinux`, the same kernel uncompressed),
# `base.cpio` and `kernel-release` on stdout.
# Usage: tests/vm/build-image.sh [CACHE_DIR]   (default: target/vm-cache)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${1:-$root/target/vm-cache}
mkdir -p "$cache/debs"
cache=$(cd "$cache" && pwd)

die() { echo "tests/vm/build-image.sh: $*" >&2; exit 1; }
for tool in busybox cpio dpkg-deb ldd ip nft socat xz; do
  command -v "$tool" >/dev/null || die "'$tool' is missing: run scripts/install-deps.sh (as root)"
done
[ -x /bin/busybox ] && file_bb=/bin/busybox || file_bb=$(command -v busybox)
ldd "$file_bb" >/dev/null 2>&1 && die "$file_bb is not static: install busybox-static (scripts/install-deps.sh)"

# 1. The kernel package: a cached .deb if there is one, else the one linux-image-amd64 points at.
deb=$(ls -1 "$cache"/debs/linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$deb" ]; then
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  pkg=$(resolve)
  if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(resolve)
  fi
  [ -n "$pkg" ] || die "cannot resolve Debian's linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64 found nothing; is this Debian with its package lists reachable?)"
  echo "vm image: downloading $pkg (not installing it)" >&2
  (cd "$cache/debs" && apt-get download -q "$pkg" >&2 2>/dev/null) || \
    (cd "$cache/debs" && apt-get update -qq >/dev/null 2>&1 && apt-get download -q "$pkg" >&2) || \
    die "apt-get download $pkg failed"
  deb=$(ls -1 "$cache"/debs/linux-image-*-amd64_*.deb | sort -V | tail -n 1)
fi

# 2. The cache key: the kernel package, the host tools copied in, and this script.
key=$( {
  basename "$deb"
  dpkg-query -W -f '${Package} ${Version}\n' busybox-static iproute2 nftables socat libc6 2>/dev/null || true
  sha256sum "$0" | cut -d' ' -f1
} | sha256sum | cut -c1-16)
out="$cache/base-$key"
if [ -s "$out/base.cpio" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/kernel-release" ]; then
  echo "$out"
  exit 0
fi

started=$(date +%s.%N)
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "vm image: unpacking $(basename "$deb")" >&2
dpkg-deb -x "$deb" "$work/deb"
kver=$(ls "$work/deb/lib/modules" | head -n 1)
[ -n "$kver" ] || die "no modules in $deb"
full="$work/deb/lib/modules/$kver"

# 3. Modules: whole directories (so the kernel can auto-load any nft expression through
# busybox modprobe and modules.alias), plus the closure of their dependencies.
rootfs="$work/root"
mods="$rootfs/lib/modules/$kver"
mkdir -p "$mods"
wanted=(
  kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter
  kernel/net/bridge kernel/net/8021q kernel/net/802 kernel/net/llc
  kernel/drivers/virtio kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko
  kernel/net/core/failover.ko kernel/drivers/net/veth.ko kernel/lib/libcrc32c.ko
  kernel/crypto/crc32c_generic.ko  # libcrc32c (nf_tables, conntrack) needs a crc32c provider
)
declare -A have=() byname=()
while IFS= read -r f; do
  n=$(basename "$f" .ko); byname[${n//-/_}]=$f
done < <(cd "$full" && find kernel -name '*.ko')
queue=()
for w in "${wanted[@]}"; do
  [ -e "$full/$w" ] || die "$w is not in $(basename "$deb")"
  while IFS= read -r f; do queue+=("$f"); done < <(cd "$full" && find "$w" -name '*.ko')
done
while ((${#queue[@]})); do
  f=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${have[$f]:-}" ] && continue
  have[$f]=1
  mkdir -p "$mods/$(dirname "$f")"
  cp "$full/$f" "$mods/$f"
  deps=$(busybox modinfo -F depends "$full/$f" 2>/dev/null || true)
  for d in ${deps//,/ }; do
    p=${byname[${d//-/_}]:-}
    [ -n "$p" ] || die "module $f depends on $d, which $(basename "$deb") does not ship"
    queue+=("$p")
  done
done
cp "$full"/modules.builtin "$full"/modules.order "$mods/" 2>/dev/null || true
busybox depmod -b "$rootfs" "$kver"
grep -q '^kernel/net/8021q/8021q.ko:' "$mods/modules.dep" || die "8021q did not make it into the image"
cp "$work/deb/boot/vmlinuz-$kver" "$work/vmlinuz"
# The uncompressed ELF kernel boots through its PVH entry point: no real-mode set-up code and
# no self-decompression, which halves boot time under software emulation (TCG).
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$work/vmlinuz" | head -n 1 | cut -d: -f1 || true)
if [ -n "$off" ]; then
  tail -c +$((off + 1)) "$work/vmlinuz" | xz -dc >"$work/vmlinux" 2>/dev/null || true
  if [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" != 177ELF ]; then
    echo "vm image: could not extract an ELF vmlinux; VMs boot the compressed kernel" >&2
    rm -f "$work/vmlinux"
  fi
fi

# 4. Userland: busybox (every applet as a link), and ip, nft, socat with their libraries.
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib64,lib/x86_64-linux-gnu,etc,proc,sys,dev,run,tmp,var,root,mnt}
ln -s ../run "$rootfs/var/run"
cp "$file_bb" "$rootfs/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
for s in modprobe insmod depmod; do ln -sf ../bin/busybox "$rootfs/sbin/$s"; done
copy_with_libs() { # BINARY DEST_PATH_IN_ROOT
  mkdir -p "$rootfs/$(dirname "$2")"
  cp -L "$1" "$rootfs/$2"
  ldd "$1" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | while read -r lib; do
    mkdir -p "$rootfs/$(dirname "$lib")"
    cp -L "$lib" "$rootfs/$lib"
  done
}
copy_with_libs "$(command -v ip)" /sbin/ip.full
copy_with_libs "$(command -v nft)" /sbin/nft
copy_with_libs "$(command -v socat)" /usr/bin/socat
# Debian's busybox runs its own applets before anything on PATH (FEATURE_PREFER_APPLETS), so
# the full iproute2 (netns, -j, -d) stays under its own name; guest scripts call /sbin/ip.full.
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf 'hosts: files\n' >"$rootfs/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' >"$rootfs/etc/hosts"
printf '%s\n' "$kver" >"$work/kernel-release"

(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$work/base.cpio"
mkdir -p "$out.tmp"
mv "$work/vmlinuz" "$work/base.cpio" "$work/kernel-release" "$out.tmp/"
[ -e "$work/vmlinux" ] && mv "$work/vmlinux" "$out.tmp/"
rm -rf "$out" && mv "$out.tmp" "$out"
# Older builds of other keys are stale.
for old in "$cache"/base-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
printf 'vm image: built %s (kernel %s, %s modules, base %s) in %.1f s\n' "$out" "$kver" "${#have[@]}" \
  "$(du -h "$out/base.cpio" | cut -f1)" "$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" >&2
echo "$out"
