#!/usr/bin/env bash
# Writes the reference topology with the lab's interface names to stdout: Vagrant keeps eth0
# for its management NIC, so the gateways' trunk is trunk0, gw-core's uplink uplink0 and its
# untagged biobank port port3 (named by MAC in provision/common.sh).
set -euo pipefail
src=${1:-/tiernet/topologies/clinical-research.yaml}
sed -e 's/^\(\s*trunk:\s*\)eth1\b/\1trunk0/' \
    -e 's/^\(\s*interface:\s*\)eth0\b/\1uplink0/' \
    -e 's/^\(\s*interface:\s*\)eth3\b/\1port3/' "$src"
