#!/bin/sh
# Injects one kind of VLAN drift on a gateway behind the agent's back and polls until the
# kernel holds the desired state again. Prints one JSON object.
# /vm/links.conf has the desired links: "NAME PARENT VLAN_ID CIDR..." (VLAN_ID - for ports).
# Usage: drift.sh delete-vlan LINK
#        drift.sh change-vlan-id LINK NEW_ID
#        drift.sh bridge-extra-vlan LINK EXTRA_ID BRIDGE
#        (TIMEOUT_S in the environment, default 10)
. "$(dirname "$0")/lib.sh"
kind=$1 link=$2 new_id=${3:-} bridge=${4:-}
limit=${TIMEOUT_S:-10}
now_us() { adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf "%d%06d\n", s, u}'; }
desired=$(grep "^$link " /vm/links.conf) || { echo "{\"case\":\"$kind\",\"error\":\"$link not in links.conf\"}"; exit 1; }
set -- $desired
parent=$2 id=$3
shift 3
cidrs=$*
trunk=$parent
link_ok() { # the desired link exists, right kind/id/parent, up, not enslaved, with its addresses
  info=$(ip -d -j link show dev "$link" 2>/dev/null) || return 1
  case $info in *'"master":'*) return 1 ;; esac
  case $info in *'"UP"'*) ;; *) return 1 ;; esac
  if [ "$id" != - ]; then
    case $info in *"\"info_kind\":\"vlan\""*) ;; *) return 1 ;; esac
    case $info in *"\"id\":$id,"* | *"\"id\":$id}"*) ;; *) return 1 ;; esac
    case $info in *"\"link\":\"$parent\""*) ;; *) return 1 ;; esac
  fi
  addrs=$(ip -j addr show dev "$link" 2>/dev/null) || return 1
  for c in $cidrs; do
    case $addrs in *"\"local\":\"${c%/*}\",\"prefixlen\":${c#*/}"*) ;; *) return 1 ;; esac
  done
}
extra_gone() { ! ip link show dev "$1" >/dev/null 2>&1; }
link_ok || { echo "{\"case\":\"$kind\",\"target\":\"$link\",\"error\":\"the link is not in its desired state before the injection\"}"; exit 1; }
before=$(wc -l </run/tiernet/drift.jsonl 2>/dev/null || echo 0)
batch=/tmp/drift.batch
extra=
case $kind in
  delete-vlan)
    printf 'link del %s\n' "$link" >$batch ;;
  change-vlan-id)
    # A VLAN id cannot be changed in place: delete and recreate under the same name, in one
    # `ip -batch` so that the agent cannot slip its revert in between.
    printf 'link del %s\nlink add link %s name %s type vlan id %s\nlink set %s up\n' \
      "$link" "$trunk" "$link" "$new_id" "$link" >$batch ;;
  bridge-extra-vlan)
    extra=$trunk.$new_id
    printf 'link add link %s name %s type vlan id %s\nlink add %s type bridge\nlink set %s master %s\nlink set %s master %s\nlink set %s up\nlink set %s up\n' \
      "$trunk" "$extra" "$new_id" "$bridge" "$extra" "$bridge" "$link" "$bridge" "$bridge" "$extra" >$batch ;;
  *) echo "{\"case\":\"$kind\",\"error\":\"unknown case\"}"; exit 2 ;;
esac
t0=$(now_us)
err=$(ip -batch $batch 2>&1)
inject_rc=$?
t1=$(now_us)
polls=0
restored=false
while :; do
  polls=$((polls + 1))
  if link_ok && { [ -z "$extra" ] || extra_gone "$extra"; }; then
    restored=true
    break
  fi
  [ $(($(now_us) - t0)) -gt $((limit * 1000000)) ] && break
  usleep 2000
done
t2=$(now_us)
sleep 1 # let the agent write its drift record
after=$(wc -l </run/tiernet/drift.jsonl 2>/dev/null || echo 0)
esc() { printf '%s' "$1" | tr '\n"\\' '   '; }
extra_state=null
[ -n "$extra" ] && { extra_gone "$extra" && extra_state='"absent"' || extra_state='"present"'; }
printf '{"case":"%s","target":"%s","injected":%s,"inject_error":"%s","inject_ms":%s,"restored":%s,"latency_ms":%s,"polls":%d,"extra":"%s","extra_after":%s,"drift_records":%d,"link_after":%s,"addresses_after":%s}\n' \
  "$kind" "$link" "$([ $inject_rc = 0 ] && echo true || echo false)" "$(esc "$err")" \
  "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1000}')" "$restored" \
  "$(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.3f", (b-a)/1000}')" "$polls" "$extra" "$extra_state" \
  $((after - before)) "$(ip -d -j link show dev "$link" 2>/dev/null || echo null)" \
  "$(ip -j addr show dev "$link" 2>/dev/null || echo null)"
