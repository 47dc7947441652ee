#!/bin/sh
# The gateway's state as the kernel reports it, as one JSON object (test witnesses: ip, nft).
. "$(dirname "$0")/lib.sh"
j() { out=$("$@" 2>/dev/null); [ -n "$out" ] && printf '%s' "$out" || printf 'null'; }
sysctls=
for k in net/ipv4/ip_forward net/ipv6/conf/all/forwarding; do
  sysctls="$sysctls\"$k\":\"$(cat /proc/sys/$k)\","
done
for f in /proc/sys/net/ipv4/conf/*/rp_filter; do
  d=${f%/rp_filter}; d=${d##*/}
  sysctls="$sysctls\"net/ipv4/conf/$d/rp_filter\":\"$(cat "$f")\","
done
printf '{"links":%s,"addresses":%s,"routes":%s,"table":%s,"sysctls":{%s}}\n' \
  "$(j ip -j -d link show)" "$(j ip -j addr show)" "$(j ip -j route show table main)" \
  "$(j nft -j list table inet tiernet)" "${sysctls%,}"
