#!/bin/sh
# Runs probe cells ("ID NS PROTO SRC DST PORT" per line) and prints "ID 1" when the
# connection was made (TCP: the listener's token came back, UDP: a reply came back, ICMP: an
# echo reply), "ID 0" otherwise. A cell is blocked when no connection came within CONNECT_S;
# a connection that came must deliver the token within DATA_S.
# One shell per namespace runs inside it (nsenter once, not per cell), its cells in waves of
# PARALLEL; the namespaces run side by side.
# Usage: probe.sh CONNECT_S DATA_S PARALLEL CELLS
. "$(dirname "$0")/lib.sh"
ct=$1 dt=$2 par=$3 cells=$4
if [ -n "${PROBE_NS:-}" ]; then
  n=0
  while read -r id ns proto src dst port; do
    [ "$ns" = "$PROBE_NS" ] || continue
    (
      out=
      case $proto in
        tcp) out=$(socat -T"$dt" -u TCP4:"$dst":"$port",bind="$src",connect-timeout="$ct" STDOUT 2>/dev/null) ;;
        # -t: after its stdin ends socat waits this long for the reply (default 0.5 s). No
        # handshake tells a blocked datagram from a slow reply: wait twice the connect timeout.
        udp) out=$(echo probe | socat -T$((ct * 2)) -t$((ct * 2)) - UDP4:"$dst":"$port",bind="$src" 2>/dev/null) ;;
        icmp) ping -c 1 -W "$ct" -I "$src" "$dst" >/dev/null 2>&1 && out=tiernet-probe ;;
      esac
      case $out in *tiernet-probe*) echo "$id 1" ;; *) echo "$id 0" ;; esac
    ) &
    n=$((n + 1))
    [ $((n % par)) = 0 ] && wait
  done <"$cells"
  wait
  exit 0
fi
for ns in $(cut -d' ' -f2 "$cells" | sort -u); do
  PROBE_NS=$ns nsenter --net="/run/netns/$ns" sh "$0" "$ct" "$dt" "$par" "$cells" &
done
wait
