#!/usr/bin/env bash
# The main job: a namespace lab of the reference topology — up, probe, drift shown reverted, down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked --bins
exec ./target/release/tiernet lab demo "${1:-topologies/clinical-research.yaml}"
