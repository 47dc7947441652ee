#!/usr/bin/env bash
# Installs what tiernet needs to build and test on Debian/Ubuntu (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(nftables iproute2 libnftnl-dev libmnl-dev pkg-config socat procps)
# The VM suite (tests/vm, tests/vm.rs): QEMU, the busybox initramfs, python3 for the harness,
# vagrant for `vagrant validate`. The guest kernel is not installed: tests/vm/build-image.sh
# fetches Debian's linux-image .deb with `apt-get download` into target/vm-cache.
pkgs+=(qemu-system-x86 busybox-static cpio xz-utils binutils python3 vagrant)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "tiernet: cargo (Rust toolchain) is required; install it with rustup first" >&2
  exit 2
fi
# tests/control_python.rs: an independent gRPC client, generated from proto/ with grpcio-tools.
if ! python3 -c "import grpc, grpc_tools" 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null; }
  python3 -m pip install -q grpcio grpcio-tools 2>/dev/null || python3 -m pip install -q --break-system-packages grpcio grpcio-tools
fi
