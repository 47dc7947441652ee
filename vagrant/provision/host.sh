#!/usr/bin/env bash
# A host VM: one network namespace per segment of its tier on a tagged sub-interface of its
# trunk NIC (or the untagged NIC), with the service and client addresses and a listener on
# every probed port, from vagrant/hosts/NAME.conf; the same script the QEMU suite uses.
. /tiernet/vagrant/provision/common.sh "$@"
# Re-provisioning: stop the listeners of the previous run (by namespace) and start afresh.
for ns in $(ip netns list | awk '{print $1}'); do
  ip netns pids "$ns" | xargs -r kill
  ip netns del "$ns"
done
TIERNET_IP=/usr/sbin/ip setsid sh /tiernet/tests/vm/guest/hosts-setup.sh "/tiernet/vagrant/hosts/$name.conf" </dev/null
ip netns list
