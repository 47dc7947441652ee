# Sourced by the role scripts: packages, the built binaries, the lab NICs named by MAC.
# Usage (from a role script): . /tiernet/vagrant/provision/common.sh NAME "MAC=NAME ..."
set -euo pipefail
name=$1
nic_map=${2:-}
repo=/tiernet
export DEBIAN_FRONTEND=noninteractive
need=(nftables iproute2 socat libnftnl11 libmnl0)
missing=()
for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

install_binaries() {
  local bin=$repo/target/release
  for b in tiernet tiernet-agent tiernet-controller; do
    [ -x "$bin/$b" ] || { echo "tiernet: $bin/$b is missing: run 'cargo build --release --bins' on the host, then 'vagrant rsync'" >&2; exit 1; }
    install -m 0755 "$bin/$b" "/usr/local/bin/$b"
  done
}

# Lab NICs get stable names from their MAC addresses (Vagrant's management NIC keeps eth0):
# a systemd .link file for every boot, and a rename now.
for pair in $nic_map; do
  mac=${pair%%=*}
  want=${pair#*=}
  cat >"/etc/systemd/network/10-tiernet-$want.link" <<LINK
[Match]
MACAddress=$mac

[Link]
Name=$want
LINK
  cur=$(ip -o link | awk -v m="$mac" 'tolower($0) ~ m {sub(":$", "", $2); sub("@.*", "", $2); print $2; exit}')
  [ -n "$cur" ] || { echo "tiernet: no NIC with MAC $mac on $name" >&2; exit 1; }
  if [ "$cur" != "$want" ]; then
    ip link set dev "$cur" down
    ip link set dev "$cur" name "$want"
  fi
  ip link set dev "$want" up
done
