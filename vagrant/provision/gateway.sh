#!/usr/bin/env bash
# A gateway: the binaries, the topology, the systemd units from dist/systemd, and its agent
# started standalone (--topology). With the controller (not built yet) the agent will get its
# state from it instead; see dist/systemd/tiernet-agent@.service.
. /tiernet/vagrant/provision/common.sh "$@"
install_binaries
install -d -m 0755 /etc/tiernet
bash /tiernet/vagrant/provision/topology.sh >/etc/tiernet/topology.yaml
tiernet validate /etc/tiernet/topology.yaml
install -m 0644 /tiernet/dist/systemd/tiernet-agent@.service /etc/systemd/system/
printf 'TIERNET_AGENT_ARGS=--topology /etc/tiernet/topology.yaml\n' >"/etc/tiernet/agent-$name.env"
systemctl daemon-reload
systemctl enable "tiernet-agent@$name"
systemctl restart "tiernet-agent@$name"
for _ in $(seq 1 50); do
  [ -e "/var/lib/tiernet/agent-$name/ready" ] && break
  sleep 0.2
done
[ -e "/var/lib/tiernet/agent-$name/ready" ] || { journalctl -u "tiernet-agent@$name" -n 40 --no-pager; exit 1; }
ip -d -br link show | grep -E '^trunk0\.' || true
echo "tiernet: agent for $name applied the topology (standalone)"
