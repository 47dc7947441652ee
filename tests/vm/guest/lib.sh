# Sourced by the guest scripts. Debian's busybox prefers its own applets to PATH, and its `ip`
# applet knows neither -j, -d nor netns: use iproute2's, copied in as /sbin/ip.full (on a
# full system, such as the Vagrant hosts, TIERNET_IP=/usr/sbin/ip).
IP=${TIERNET_IP:-/sbin/ip.full}
ip() { "$IP" "$@"; }
# Runs a command in network namespace $1 (`ip` there is iproute2's too).
in_ns() {
  ns=$1
  shift
  [ "$1" = ip ] && { shift; set -- "$IP" "$@"; }
  nsenter --net="/run/netns/$ns" "$@"
}
