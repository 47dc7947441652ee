#!/usr/bin/env bash
# The whole test suite, as CI runs it: deps, format, lints, every test (namespaces and VMs included).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "tiernet tests create network namespaces and nftables tables: run as root" >&2
  exit 2
fi
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are built by clippy --all-targets and run on their own (cargo bench): they print figures.
cargo test --locked --lib --bins --tests -- --test-threads=2
