//! The few route-netlink operations the lab needs, on a handle bound to one namespace.

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{BridgeStpState, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

pub async fn index_of(h: &Handle, name: &str) -> Result<u32> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(m.header.index),
        Ok(None) => Err(anyhow!("link {name} does not exist")),
        Err(e) => Err(anyhow!("looking up link {name}: {e}")),
    }
}

pub async fn links(h: &Handle) -> Result<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing links")
}

pub fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let index = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

pub async fn set_down(h: &Handle, name: &str) -> Result<()> {
    let index = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} down"))
}

/// Whether link `name` is administratively up.
pub async fn is_up(h: &Handle, name: &str) -> Result<bool> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(m.header.flags.contains(LinkFlags::Up)),
        Ok(None) => Err(anyhow!("link {name} does not exist")),
        Err(e) => Err(anyhow!("looking up link {name}: {e}")),
    }
}

/// A bridge without STP, so its ports forward at once.
pub async fn add_bridge(h: &Handle, name: &str) -> Result<()> {
    let msg = LinkBridge::new(name)
        .stp_state(BridgeStpState::Disabled)
        .forward_delay(0)
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("creating bridge {name}"))
}

pub async fn add_veth(h: &Handle, name: &str, peer: &str) -> Result<()> {
    h.link()
        .add(LinkVeth::new(name, peer).build())
        .execute()
        .await
        .with_context(|| format!("creating veth pair {name}/{peer}"))
}

/// Moves link `name` into the namespace behind `ns`, renaming it to `new_name` on the
/// way (one request, so the name never clashes in either namespace).
pub async fn move_to(h: &Handle, name: &str, ns: &std::fs::File, new_name: &str) -> Result<()> {
    let index = index_of(h, name).await?;
    let msg = LinkUnspec::new_with_index(index)
        .setns_by_fd(ns.as_raw_fd())
        .name(new_name.to_string())
        .build();
    h.link()
        .set(msg)
        .execute()
        .await
        .with_context(|| format!("moving {name} into its namespace as {new_name}"))
}

pub async fn set_controller(h: &Handle, name: &str, bridge: &str) -> Result<()> {
    let index = index_of(h, name).await?;
    let master = index_of(h, bridge).await?;
    h.link()
        .set(LinkUnspec::new_with_index(index).controller(master).build())
        .execute()
        .await
        .with_context(|| format!("adding {name} to bridge {bridge}"))
}

/// Adds an address; IPv6 ones skip duplicate address detection so they work at once.
pub async fn add_address(h: &Handle, link: &str, address: IpNet) -> Result<()> {
    let index = index_of(h, link).await?;
    let mut req = h.address().add(index, address.addr(), address.prefix_len());
    req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    req.execute()
        .await
        .with_context(|| format!("adding {address} to {link}"))
}

fn address_net(m: &AddressMessage) -> Option<IpNet> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    IpNet::new(addr, m.header.prefix_len).ok()
}

/// The addresses on link `link` (all families, link-local included).
pub async fn addresses(h: &Handle, link: &str) -> Result<Vec<IpNet>> {
    let index = index_of(h, link).await?;
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .with_context(|| format!("listing addresses of {link}"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(address_net)
        .collect())
}

pub async fn delete_address(h: &Handle, link: &str, address: IpNet) -> Result<()> {
    let index = index_of(h, link).await?;
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    let mut found = false;
    for m in msgs
        .into_iter()
        .filter(|m| m.header.index == index && address_net(m) == Some(address))
    {
        found = true;
        h.address()
            .del(m)
            .execute()
            .await
            .with_context(|| format!("deleting {address} from {link}"))?;
    }
    if found {
        Ok(())
    } else {
        Err(anyhow!("{link} has no address {address}"))
    }
}

pub async fn add_route(
    h: &Handle,
    destination: IpNet,
    via: IpAddr,
    oif: Option<&str>,
) -> Result<()> {
    let oif = match oif {
        Some(name) => Some(index_of(h, name).await?),
        None => None,
    };
    let msg = match (destination, via) {
        (IpNet::V4(d), IpAddr::V4(v)) => {
            let b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(v);
            match oif {
                Some(i) => b.output_interface(i).build(),
                None => b.build(),
            }
        }
        (IpNet::V6(d), IpAddr::V6(v)) => {
            let b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(v);
            match oif {
                Some(i) => b.output_interface(i).build(),
                None => b.build(),
            }
        }
        _ => {
            return Err(anyhow!(
                "route to {destination} via {via}: address families differ"
            ))
        }
    };
    h.route()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("adding route {destination} via {via}"))
}

/// A route of the main table as the lab looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub destination: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub message: RouteMessage,
}

fn route_entry(m: RouteMessage) -> Option<RouteEntry> {
    let r = crate::dataplane::net::main_route(&m)?;
    Some(RouteEntry {
        destination: r.destination,
        via: r.via,
        oif: r.oif,
        protocol: r.protocol,
        message: m,
    })
}

/// Routes of the main table, both families.
pub async fn routes(h: &Handle) -> Result<Vec<RouteEntry>> {
    let mut out = Vec::new();
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let msgs: Vec<RouteMessage> = h
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        out.extend(msgs.into_iter().filter_map(route_entry));
    }
    Ok(out)
}

pub async fn delete_route(h: &Handle, route: &RouteEntry) -> Result<()> {
    h.route()
        .del(route.message.clone())
        .execute()
        .await
        .with_context(|| format!("deleting route {}", route.destination))
}
