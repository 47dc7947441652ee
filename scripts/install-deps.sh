#!/usr/bin/env bash
# Installs what tiernet needs to build and test on Debian/Ubuntu (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(nftables iproute2 libnftnl-dev libmnl-dev pkg-config socat procps)
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
