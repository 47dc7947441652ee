//! Builds a lab plan in the kernel: namespaces, bridges, veth pairs, and the host side
//! (addresses, routes). Every veth pair is created in the switch namespace and its ends
//! moved out, so nothing of the lab ever appears in the caller's namespace.

use super::nl;
use super::plan::LabPlan;
use super::state::LabDir;
use crate::netns;
use anyhow::{Context, Result};
use rtnetlink::Handle;
use std::collections::HashMap;

/// Sysctls every lab namespace gets. IPv6 addresses must work at once (no DAD wait);
/// `ping_group_range` lets probes use unprivileged ICMP sockets.
const SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];

/// A route-netlink handle per namespace of the lab.
pub struct Handles(HashMap<String, Handle>);

impl Handles {
    pub fn open(namespaces: &[String]) -> Result<Handles> {
        let mut map = HashMap::new();
        for ns in namespaces {
            map.insert(ns.clone(), netns::rtnetlink_in(ns)?);
        }
        Ok(Handles(map))
    }

    pub fn get(&self, ns: &str) -> Result<&Handle> {
        self.0
            .get(ns)
            .with_context(|| format!("no netlink handle for namespace {ns}"))
    }
}

/// Creates one lab namespace, recorded in `dir` first so `down` finds it whatever happens.
pub fn create_namespace(dir: &LabDir, ns: &str) -> Result<()> {
    dir.record_namespace(ns)?;
    netns::create(ns)?;
    for (key, value) in SYSCTLS {
        netns::sysctl_in(ns, key, value)?;
    }
    Ok(())
}

/// Creates the plan's namespaces that do not exist yet (the switch may, from the 802.1Q check).
pub fn create_namespaces(plan: &LabPlan, dir: &LabDir) -> Result<()> {
    for ns in plan.namespaces() {
        if !(ns == plan.switch_ns && netns::exists(&ns)) {
            create_namespace(dir, &ns)?;
        }
    }
    Ok(())
}

/// Everything after the namespaces: loopbacks, bridges, wires, host addresses and routes.
pub async fn wire(plan: &LabPlan, handles: &Handles) -> Result<()> {
    for ns in plan.namespaces() {
        nl::set_up(handles.get(&ns)?, "lo")
            .await
            .with_context(|| format!("in {ns}"))?;
    }
    let sw = handles.get(&plan.switch_ns)?;
    for (bridge, segment) in &plan.bridges {
        nl::add_bridge(sw, bridge)
            .await
            .with_context(|| format!("switch for segment {segment}"))?;
    }
    for (i, w) in plan.wires.iter().enumerate() {
        // Temporary names in the switch namespace; an end that stays there gets its own name.
        let name_in_sw = |end: &super::plan::End, side: char| {
            if end.ns == plan.switch_ns {
                end.ifname.clone()
            } else {
                format!("lab{i}{side}")
            }
        };
        let (a_tmp, b_tmp) = (name_in_sw(&w.a, 'a'), name_in_sw(&w.b, 'b'));
        nl::add_veth(sw, &a_tmp, &b_tmp)
            .await
            .with_context(|| w.what.clone())?;
        for (end, tmp) in [(&w.a, &a_tmp), (&w.b, &b_tmp)] {
            if end.ns != plan.switch_ns {
                let target = netns::open(&end.ns)?;
                nl::move_to(sw, tmp, &target, &end.ifname)
                    .await
                    .with_context(|| w.what.clone())?;
            }
            let h = handles.get(&end.ns)?;
            if let Some(bridge) = &end.bridge {
                nl::set_controller(h, &end.ifname, bridge).await?;
            }
            for a in &end.addresses {
                nl::add_address(h, &end.ifname, *a)
                    .await
                    .with_context(|| format!("{} in {}", w.what, end.ns))?;
            }
            nl::set_up(h, &end.ifname)
                .await
                .with_context(|| format!("{} in {}", w.what, end.ns))?;
        }
    }
    for host in &plan.hosts {
        let h = handles.get(&host.ns)?;
        for a in &host.loopback {
            nl::add_address(h, "lo", *a)
                .await
                .with_context(|| format!("host {}", host.name))?;
        }
        for r in &host.routes {
            nl::add_route(h, r.destination, r.via, None)
                .await
                .with_context(|| format!("host {}", host.name))?;
        }
    }
    Ok(())
}

/// Whether this kernel can create 802.1Q interfaces: tried on a scratch veth inside the
/// (fresh, empty) switch namespace, then removed.
pub async fn has_8021q(sw: &Handle) -> Result<bool> {
    nl::add_veth(sw, "q8021a", "q8021b").await?;
    let parent = nl::index_of(sw, "q8021a").await?;
    let ok = sw
        .link()
        .add(rtnetlink::LinkVlan::new("q8021a.7", parent, 7).build())
        .execute()
        .await
        .is_ok();
    let index = nl::index_of(sw, "q8021a").await?;
    // Deleting one end of a veth deletes the pair (and the VLAN on it).
    sw.link()
        .del(index)
        .execute()
        .await
        .context("removing the 802.1Q test veth")?;
    Ok(ok)
}
