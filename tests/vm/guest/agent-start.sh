#!/bin/sh
# Starts tiernet-agent standalone for gateway $1 on /vm/topology.yaml and waits for its first apply.
# Usage: agent-start.sh GATEWAY TODAY TIMEOUT_S [EXTRA AGENT ARGS...]
. "$(dirname "$0")/lib.sh"
gw=$1 today=$2 limit=$3
shift 3
mkdir -p /run/tiernet
rm -f /run/tiernet/ready
start=$(cut -d' ' -f1 /proc/uptime)
setsid tiernet-agent --gateway "$gw" --topology /vm/topology.yaml --state-dir /run/tiernet \
  --today "$today" "$@" </dev/null >/run/agent.out 2>/run/agent.log &
echo $! >/run/agent.pid
i=0
while [ ! -e /run/tiernet/ready ]; do
  if ! kill -0 "$(cat /run/agent.pid)" 2>/dev/null; then
    echo "tiernet-agent exited before it was ready:"; tail -n 40 /run/agent.log; exit 1
  fi
  i=$((i + 1))
  [ $i -gt $((limit * 20)) ] && { echo "tiernet-agent not ready after ${limit}s:"; tail -n 40 /run/agent.log; exit 1; }
  usleep 50000
done
end=$(cut -d' ' -f1 /proc/uptime)
echo "ready_after_s=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b-a}')"
