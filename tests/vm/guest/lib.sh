# Sourced by the guest scripts. Debian's busybox prefers its own applets to PATH, and its `ip`
# applet knows neither -j, -d nor netns: use iproute2's, copied in as /sbin/ip.full.
ip() { /sbin/ip.full "$@"; }
# Runs a command in network namespace $1 (`ip` there is iproute2's too).
in_ns() {
  ns=$1
  shift
  [ "$1" = ip ] && { shift; set -- /sbin/ip.full "$@"; }
  nsenter --net="/run/netns/$ns" "$@"
}
