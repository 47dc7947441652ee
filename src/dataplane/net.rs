//! Links, addresses, routes and sysctls over rtnetlink: read the kernel's state and
//! carry out the planner's actions. The only code that writes them.

use crate::compile::{GatewayState, Route, ROUTE_PROTOCOL};
use crate::plan::observed::{ObservedKind, ObservedLink, ObservedRoute};
use crate::plan::Action;
use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVlan, RouteMessageBuilder};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A route-netlink connection in the current network namespace.
pub struct Net {
    handle: Handle,
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_kind(m: &LinkMessage, names: &HashMap<u32, String>) -> ObservedKind {
    let parent = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => names.get(i).cloned(),
        _ => None,
    });
    let infos = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    });
    let Some(infos) = infos else {
        return ObservedKind::Other { kind: None };
    };
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.clone()),
        _ => None,
    });
    match kind {
        Some(InfoKind::Vlan) => {
            let id = infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vlan(v)) => v.iter().find_map(|x| match x {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            });
            ObservedKind::Vlan {
                parent: parent.unwrap_or_default(),
                id: id.unwrap_or(0),
            }
        }
        Some(InfoKind::Bridge) => ObservedKind::Bridge,
        Some(other) => ObservedKind::Other {
            kind: Some(other.to_string()),
        },
        None => ObservedKind::Other { kind: None },
    }
}

fn address_of(m: &AddressMessage) -> Option<IpNet> {
    // For IPv4, LOCAL is the interface's own address (ADDRESS is the peer on p2p links).
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

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The fields of a main-table route that tiernet compares; None for other tables and families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainRoute {
    pub destination: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
}

pub fn main_route(m: &RouteMessage) -> Option<MainRoute> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let family_any = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let dst = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_addr(d),
            _ => None,
        })
        .unwrap_or(family_any);
    Some(MainRoute {
        destination: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
        via: m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => route_addr(g),
            _ => None,
        }),
        oif: m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        }),
        protocol: u8::from(m.header.protocol),
    })
}

fn observed_route(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<ObservedRoute> {
    let r = main_route(m)?;
    Some(ObservedRoute {
        destination: r.destination,
        via: r.via,
        dev: r.oif.and_then(|i| names.get(&i).cloned()),
        protocol: r.protocol,
    })
}

impl Net {
    /// Connects in the calling thread's network namespace; the connection task runs on tokio.
    pub fn connect() -> Result<Net> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening route netlink socket")?;
        tokio::spawn(conn);
        Ok(Net { handle })
    }

    async fn link_messages(&self) -> Result<Vec<LinkMessage>> {
        Ok(self.handle.link().get().execute().try_collect().await?)
    }

    pub async fn index_names(&self) -> Result<HashMap<u32, String>> {
        Ok(self
            .link_messages()
            .await?
            .iter()
            .filter_map(|m| Some((m.header.index, link_name(m)?)))
            .collect())
    }

    pub async fn links(&self) -> Result<Vec<ObservedLink>> {
        let msgs = self.link_messages().await?;
        let names: HashMap<u32, String> = msgs
            .iter()
            .filter_map(|m| Some((m.header.index, link_name(m)?)))
            .collect();
        let addrs: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await?;
        let mut links = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let Some(name) = link_name(m) else { continue };
            let master = m.attributes.iter().find_map(|a| match a {
                LinkAttribute::Controller(i) => names.get(i).cloned(),
                _ => None,
            });
            let mut addresses: Vec<IpNet> = addrs
                .iter()
                .filter(|a| a.header.index == m.header.index)
                .filter_map(address_of)
                .collect();
            addresses.sort();
            links.push(ObservedLink {
                name,
                index: m.header.index,
                kind: link_kind(m, &names),
                up: m.header.flags.contains(LinkFlags::Up),
                master,
                addresses,
            });
        }
        Ok(links)
    }

    pub async fn routes(&self) -> Result<Vec<ObservedRoute>> {
        let names = self.index_names().await?;
        let mut out = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await?;
            out.extend(msgs.iter().filter_map(|m| observed_route(m, &names)));
        }
        out.sort();
        Ok(out)
    }

    async fn index_of(&self, name: &str) -> Result<u32> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) => Err(anyhow!("link {name} does not exist")),
            Err(e) => Err(anyhow!("link {name}: {e}")),
        }
    }

    fn route_message(&self, r: &Route, oif: u32) -> Result<RouteMessage> {
        let msg = match (r.destination, r.via) {
            (IpNet::V4(d), IpAddr::V4(via)) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(via)
                .output_interface(oif)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build(),
            (IpNet::V6(d), IpAddr::V6(via)) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(via)
                .output_interface(oif)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build(),
            _ => {
                return Err(anyhow!(
                    "route {} via {}: address families differ",
                    r.destination,
                    r.via
                ))
            }
        };
        Ok(msg)
    }

    /// Carries out one non-nftables action. Returns the netlink writes it made.
    pub async fn execute(&self, action: &Action) -> Result<()> {
        match action {
            Action::ReplaceTable => {
                Err(anyhow!("the nftables table is not replaced over rtnetlink"))
            }
            Action::CreateVlan { name, parent, id } => {
                let parent_index = self.index_of(parent).await?;
                self.handle
                    .link()
                    .add(LinkVlan::new(name, parent_index, *id).up().build())
                    .execute()
                    .await
                    .with_context(|| format!("creating vlan {name} (id {id} on {parent})"))
            }
            Action::DeleteLink { name } => {
                let index = self.index_of(name).await?;
                self.handle
                    .link()
                    .del(index)
                    .execute()
                    .await
                    .with_context(|| format!("deleting link {name}"))
            }
            Action::Detach { name, .. } => {
                let index = self.index_of(name).await?;
                self.handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).nocontroller().build())
                    .execute()
                    .await
                    .with_context(|| format!("detaching {name} from its bridge"))
            }
            Action::SetUp { name } => {
                let index = self.index_of(name).await?;
                self.handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .with_context(|| format!("setting {name} up"))
            }
            Action::AddAddress { link, address } => {
                let index = self.index_of(link).await?;
                self.handle
                    .address()
                    .add(index, address.addr(), address.prefix_len())
                    .replace()
                    .execute()
                    .await
                    .with_context(|| format!("adding {address} to {link}"))
            }
            Action::DeleteAddress { link, address } => {
                let index = self.index_of(link).await?;
                let msgs: Vec<AddressMessage> = self
                    .handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect()
                    .await?;
                for m in msgs.into_iter().filter(|m| address_of(m) == Some(*address)) {
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .with_context(|| format!("deleting {address} from {link}"))?;
                }
                Ok(())
            }
            Action::AddRoute { route } => {
                let oif = self.index_of(&route.dev).await?;
                let msg = self.route_message(route, oif)?;
                self.handle
                    .route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .with_context(|| {
                        format!("adding route {} via {}", route.destination, route.via)
                    })
            }
            Action::DeleteRoute { route } => {
                let names = self.index_names().await?;
                let query = match route.destination {
                    IpNet::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
                    IpNet::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
                };
                let msgs: Vec<RouteMessage> = self
                    .handle
                    .route()
                    .get(query)
                    .execute()
                    .try_collect()
                    .await?;
                for m in msgs
                    .into_iter()
                    .filter(|m| observed_route(m, &names).as_ref() == Some(route))
                {
                    self.handle
                        .route()
                        .del(m)
                        .execute()
                        .await
                        .with_context(|| format!("deleting route {}", route.destination))?;
                }
                Ok(())
            }
            Action::SetSysctl { key, value } => super::sysctl::write(key, value),
        }
    }

    /// Names of the links a desired state manages, for event filtering.
    pub fn managed_names(desired: &GatewayState) -> Vec<String> {
        desired.links.iter().map(|l| l.name.clone()).collect()
    }
}
