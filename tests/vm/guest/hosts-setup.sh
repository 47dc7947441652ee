#!/bin/sh
# Builds the host side of the lab from /vm/hosts.conf (written by the harness):
#   switch BRIDGE IFACE...        a VLAN-transparent switch joining the gateways' trunks
#   ns NAME vlan BRIDGE ID        a namespace whose eth0 is a tagged sub-interface of the switch
#   ns NAME nic IFACE             a namespace whose eth0 is an untagged NIC
#   addr NAME CIDR | route NAME VIA | listen NAME tcp|udp PORT
. "$(dirname "$0")/lib.sh"
set -e
conf=${1:-/vm/hosts.conf}
echo tiernet-probe >/run/token
while read -r what a rest; do
  set -- $rest
  b=${1:-} c=${2:-} d=${3:-}
  case $what in
    switch)
      ip link add "$a" type bridge forward_delay 0 stp_state 0
      for port in $rest; do ip link set "$port" master "$a"; ip link set "$port" up; done
      ip link set "$a" up
      ;;
    ns)
      ip netns add "$a"
      if [ "$b" = vlan ]; then
        ip link add link "$c" name "v$d" type vlan id "$d"
        ip link set "v$d" netns "$a"
        in_ns "$a" ip link set "v$d" name eth0
      else
        ip link set "$c" netns "$a"
        in_ns "$a" ip link set "$c" name eth0
      fi
      in_ns "$a" ip link set lo up
      in_ns "$a" ip link set eth0 up
      ;;
    addr) in_ns "$a" ip addr add "$b" dev eth0 ;;
    route) in_ns "$a" ip route add default via "$b" dev eth0 ;;
    listen)
      # TCP: the token goes out from a file the forked child opens (no exec per connection),
      # with a deep backlog so that a burst of parallel probes is never dropped at the listener.
      # UDP: the child must read the datagram, so it runs `cat` with the datagram on stdin.
      if [ "$b" = tcp ]; then
        in_ns "$a" socat -U TCP4-LISTEN:"$c",fork,reuseaddr,backlog=512 OPEN:/run/token </dev/null >/dev/null 2>&1 &
      else
        in_ns "$a" socat UDP4-RECVFROM:"$c",fork EXEC:"cat /run/token" </dev/null >/dev/null 2>&1 &
      fi
      ;;
    '' | '#'*) ;;
    *) echo "hosts.conf: unknown directive $what" >&2; exit 2 ;;
  esac
done <"$conf"
# Every listener must be up: a denied probe has to mean the firewall, never a closed port.
tries=0
while :; do
  missing=
  while read -r what a b c rest; do
    [ "$what" = listen ] || continue
    # /proc/net/{tcp,udp} of the namespace: local port in hex, TCP in state 0A (LISTEN).
    hex=$(printf '%04X' "$c")
    if [ "$b" = tcp ]; then
      in_ns "$a" cat /proc/net/tcp | grep -q ":$hex [0-9A-F:]* 0A " || missing="$missing $a:$b/$c"
    else
      in_ns "$a" cat /proc/net/udp | grep -q ":$hex " || missing="$missing $a:$b/$c"
    fi
  done <"$conf"
  [ -z "$missing" ] && exit 0
  tries=$((tries + 1))
  [ $tries -gt 100 ] && { echo "listeners not up after 20 s:$missing" >&2; exit 1; }
  sleep 0.2
done
