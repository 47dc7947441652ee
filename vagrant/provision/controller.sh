#!/usr/bin/env bash
# The controller VM. tiernet-controller is not built yet (the binary says so and exits 2), so
# its unit is installed but NOT enabled, and no certificates are made (`tiernet pki` does not
# exist yet); the gateways' agents run standalone meanwhile. The controller VM holds the CLI
# for `tiernet validate/render/reach` against the lab's topology.
. /tiernet/vagrant/provision/common.sh "$@"
install_binaries
install -d -m 0755 /etc/tiernet
bash /tiernet/vagrant/provision/topology.sh >/etc/tiernet/topology.yaml
tiernet validate /etc/tiernet/topology.yaml
install -m 0644 /tiernet/dist/systemd/tiernet-controller.service /etc/systemd/system/
systemctl daemon-reload
echo "tiernet: controller unit installed, not enabled: the controller is not part of this build"
