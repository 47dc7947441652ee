//! The planner against hand-made observations of the compiled reference gateway.

use super::observed::*;
use super::*;
use crate::compile::{compile, GatewayState, Zone};
use chrono::NaiveDate;

fn gw_core() -> GatewayState {
    let text = include_str!("../../topologies/clinical-research.yaml");
    let (topo, diags) = crate::topology::parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let compiled = compile(&topo.unwrap(), today).unwrap();
    compiled.gateway("gw-core").unwrap().clone()
}

const CANON: &[&str] = &["table inet tiernet"];

/// What the kernel would hold once the desired state is applied.
fn converged(d: &GatewayState) -> Observed {
    let mut links: Vec<ObservedLink> = vec![ObservedLink {
        name: "eth1".into(),
        index: 2,
        kind: ObservedKind::Other { kind: None },
        up: true,
        master: None,
        addresses: vec![],
    }];
    for (i, l) in d.links.iter().enumerate() {
        let kind = match &l.kind {
            LinkKind::Vlan { parent, id } => ObservedKind::Vlan {
                parent: parent.clone(),
                id: *id,
            },
            LinkKind::Port => ObservedKind::Other {
                kind: Some("veth".into()),
            },
        };
        let mut addresses = l.addresses.clone();
        addresses.push("fe80::1/64".parse().unwrap());
        links.push(ObservedLink {
            name: l.name.clone(),
            index: 10 + i as u32,
            kind,
            up: true,
            master: None,
            addresses,
        });
    }
    let mut routes: Vec<ObservedRoute> = d
        .routes
        .iter()
        .map(|r| ObservedRoute {
            destination: r.destination,
            via: Some(r.via),
            dev: Some(r.dev.clone()),
            protocol: crate::compile::ROUTE_PROTOCOL,
        })
        .collect();
    for l in &d.links {
        for a in &l.addresses {
            routes.push(ObservedRoute {
                destination: a.trunc(),
                via: None,
                dev: Some(l.name.clone()),
                protocol: PROTO_KERNEL,
            });
        }
    }
    Observed {
        links,
        routes,
        sysctls: d
            .sysctls
            .iter()
            .map(|s| (s.key.clone(), Some(s.value.clone())))
            .collect(),
        nft: ObservedNft {
            table: Some(canon()),
            foreign_chains: vec![],
            unowned: false,
        },
    }
}

fn canon() -> Vec<String> {
    CANON.iter().map(|s| s.to_string()).collect()
}

fn actions(d: &GatewayState, o: &Observed) -> Vec<String> {
    plan(d, &canon(), o)
        .actions
        .iter()
        .map(|a| a.to_string())
        .collect()
}

#[test]
fn converged_state_plans_nothing() {
    let d = gw_core();
    let p = plan(&d, &canon(), &converged(&d));
    assert!(p.actions.is_empty() && p.problems.is_empty(), "{p:?}");
}

#[test]
fn empty_gateway_gets_everything_in_safe_order() {
    let d = gw_core();
    let mut o = converged(&d);
    o.links
        .retain(|l| l.name == "eth1" || l.name == "eth0" || l.name == "eth3");
    for l in &mut o.links {
        l.addresses.clear();
        l.up = false;
    }
    o.routes.clear();
    o.sysctls.iter_mut().for_each(|s| s.1 = Some("0".into()));
    o.nft.table = None;
    let a = actions(&d, &o);
    assert_eq!(
        a[0], "replace nftables table inet tiernet",
        "the filter goes in before anything can forward"
    );
    assert!(a.contains(&"create vlan eth1.310 (id 310 on eth1)".to_string()));
    assert!(a.contains(&"add address 10.3.10.1/24 on eth1.310".to_string()));
    assert!(a.contains(&"add route 10.4.10.0/24 via 10.255.0.2 dev eth1.900".to_string()));
    assert_eq!(
        a.last().map(String::as_str),
        Some("set sysctl net.ipv4.conf.eth3.rp_filter = 1")
    );
    let fwd = a.iter().position(|x| x.contains("ip_forward")).unwrap();
    let last_route = a.iter().rposition(|x| x.starts_with("add route")).unwrap();
    assert!(
        fwd > last_route,
        "forwarding is switched on after routes and addresses"
    );
}

#[test]
fn each_kind_of_drift_plans_its_revert() {
    let d = gw_core();
    let mut o = converged(&d);
    o.nft.table = Some(vec![
        "table inet tiernet".into(),
        "rule forward: accept".into(),
    ]);
    o.routes
        .retain(|r| r.destination.to_string() != "10.4.10.0/24");
    o.routes.push(ObservedRoute {
        destination: "10.9.0.0/16".parse().unwrap(),
        via: Some("10.2.10.99".parse().unwrap()),
        dev: Some("eth1.210".into()),
        protocol: 3,
    });
    o.routes.push(ObservedRoute {
        destination: "10.3.20.128/25".parse().unwrap(),
        via: Some("192.0.2.1".parse().unwrap()),
        dev: Some("mgmt0".into()),
        protocol: 4,
    });
    o.routes.push(ObservedRoute {
        destination: "0.0.0.0/0".parse().unwrap(),
        via: Some("192.0.2.1".parse().unwrap()),
        dev: Some("mgmt0".into()),
        protocol: 16,
    });
    let l310 = o.links.iter_mut().find(|l| l.name == "eth1.310").unwrap();
    l310.up = false;
    l310.addresses.retain(|a| a.to_string() != "10.3.10.1/24");
    l310.master = Some("br0".into());
    o.links.retain(|l| l.name != "eth1.410");
    o.links.push(ObservedLink {
        name: "eth1.999".into(),
        index: 99,
        kind: ObservedKind::Vlan {
            parent: "eth1".into(),
            id: 999,
        },
        up: true,
        master: Some("br0".into()),
        addresses: vec![],
    });
    o.links.push(ObservedLink {
        name: "eth1.110".into(),
        index: 98,
        kind: ObservedKind::Vlan {
            parent: "eth1".into(),
            id: 111,
        },
        up: true,
        master: None,
        addresses: vec![],
    });
    o.links.retain(|l| !(l.name == "eth1.110" && l.index != 98));
    let a = actions(&d, &o);
    for want in [
        "replace nftables table inet tiernet",
        "add route 10.4.10.0/24 via 10.255.0.2 dev eth1.900",
        "delete route 10.9.0.0/16 via 10.2.10.99 dev eth1.210 (proto 3)",
        "delete route 10.3.20.128/25 via 192.0.2.1 dev mgmt0 (proto 4)",
        "set eth1.310 up",
        "add address 10.3.10.1/24 on eth1.310",
        "detach eth1.310 from br0",
        "delete link eth1.999",
        "delete link eth1.110",
        "create vlan eth1.110 (id 110 on eth1)",
    ] {
        assert!(a.contains(&want.to_string()), "missing '{want}' in {a:#?}");
    }
    assert!(
        !a.iter().any(|x| x.contains("0.0.0.0/0 via 192.0.2.1")),
        "a management default route is not ours to touch: {a:#?}"
    );
    // eth1.410 belongs to gw-his, not gw-core: nothing to create here.
    assert!(!a.iter().any(|x| x.contains("eth1.410")));
}

#[test]
fn an_unowned_table_is_taken_back_even_when_equal() {
    let d = gw_core();
    let mut o = converged(&d);
    o.nft.unowned = true;
    assert_eq!(
        actions(&d, &o),
        vec!["replace nftables table inet tiernet".to_string()]
    );
}

#[test]
fn missing_trunk_or_port_is_a_problem_not_an_action() {
    let d = gw_core();
    let mut o = converged(&d);
    o.links.retain(|l| {
        l.name != "eth3" && !matches!(l.kind, ObservedKind::Vlan { .. }) && l.name != "eth1"
    });
    let p = plan(&d, &canon(), &o);
    assert!(
        p.problems.contains(&"port eth3 does not exist".to_string()),
        "{:?}",
        p.problems
    );
    assert!(
        p.problems
            .iter()
            .any(|x| x.starts_with("trunk eth1 for eth1.110")),
        "{:?}",
        p.problems
    );
}

#[test]
fn foreign_base_chain_is_reported_not_removed() {
    let d = gw_core();
    let mut o = converged(&d);
    o.nft.foreign_chains.push(ForeignChain {
        family: "inet".into(),
        table: "foreign".into(),
        chain: "fwd".into(),
        hook: "forward".into(),
    });
    let p = plan(&d, &canon(), &o);
    assert!(p.actions.is_empty());
    assert_eq!(
        p.notices,
        vec![
            "table inet foreign has chain fwd on the forward hook; tiernet's drops still hold"
                .to_string()
        ]
    );
    assert!(d.links.iter().any(|l| l.zone == Zone::Uplink));
}
