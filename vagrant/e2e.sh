#!/usr/bin/env bash
# The probe truth table of the reference topology, run from the Vagrant hosts across the real
# trunk, against `tiernet reach` computed here. Run from vagrant/ after `vagrant up`:
#   ./e2e.sh            exit 0 when every cell matches, 1 otherwise
# Needs python3 and target/release/tiernet on this machine (cargo build --release --bins).
set -euo pipefail
cd "$(dirname "$0")"
tiernet=${TIERNET:-../target/release/tiernet}
[ -x "$tiernet" ] || { echo "e2e: $tiernet is missing: cargo build --release --bins" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Each cell: ID NS PROTO SRC DST PORT EXPECTED(1/0) SOURCE DESTINATION TRAFFIC
python3 ../tests/vm/harness.py --tiernet "$tiernet" --cells-only "$work/cells"
host_of() {
  case $1 in
    dmz) echo host-buffer ;;
    office-lan) echo host-office ;;
    vdi | research-servers | biobank) echo host-research ;;
    his) echo host-hospital ;;
    internet) echo internet ;;
    *) echo "e2e: no host for namespace $1" >&2; exit 2 ;;
  esac
}
: >"$work/observed"
for host in $(cut -d' ' -f2 "$work/cells" | sort -u | while read -r ns; do host_of "$ns"; done | sort -u); do
  : >"$work/$host.cells"
  while read -r id ns rest; do
    [ "$(host_of "$ns")" = "$host" ] && echo "$id $ns $rest" | cut -d' ' -f1-6 >>"$work/$host.cells"
  done <"$work/cells"
  echo "e2e: $(wc -l <"$work/$host.cells") cells from $host" >&2
  vagrant ssh "$host" -c "cat >/tmp/tiernet-cells && sudo TIERNET_IP=/usr/sbin/ip sh /tiernet/tests/vm/guest/probe.sh 2 5 16 /tmp/tiernet-cells" \
    <"$work/$host.cells" | tr -d '\r' >>"$work/observed"
done
fail=0 total=0
while read -r id ns proto src dst port expected from to traffic; do
  total=$((total + 1))
  got=$(awk -v id="$id" '$1 == id {print $2; exit}' "$work/observed")
  if [ "$got" != "$expected" ]; then
    fail=$((fail + 1))
    printf 'MISMATCH %-18s -> %-18s %-9s (%s -> %s): tiernet reach %s, observed %s\n' "$from" "$to" "$traffic" \
      "$src" "$dst" "$([ "$expected" = 1 ] && echo allowed || echo denied)" \
      "$([ "$got" = 1 ] && echo connected || echo "${got:-no result}")"
  fi
done <"$work/cells"
echo "e2e: $((total - fail)) passed, $fail failed"
[ "$fail" = 0 ]
