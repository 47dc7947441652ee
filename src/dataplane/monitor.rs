//! Kernel change notifications: rtnetlink multicast groups (links, addresses, routes) and
//! nftables notifications, turned into events for the agent's drift loop.

use anyhow::{Context, Result};
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Something changed in the kernel that may concern a gateway's state.
#[derive(Debug, Clone)]
pub struct KernelEvent {
    pub at: Instant,
    pub what: String,
}

fn describe(msg: &RouteNetlinkMessage) -> Option<String> {
    use RouteNetlinkMessage::*;
    Some(match msg {
        NewLink(_) => "link changed".into(),
        DelLink(_) => "link deleted".into(),
        NewAddress(_) => "address added".into(),
        DelAddress(_) => "address removed".into(),
        NewRoute(m) => format!("route added (proto {})", u8::from(m.header.protocol)),
        DelRoute(m) => format!("route deleted (proto {})", u8::from(m.header.protocol)),
        _ => return None,
    })
}

/// Subscribes to link, address and route changes in the current network namespace and
/// forwards them to `events` until the receiver is gone.
pub fn watch_rtnetlink(events: UnboundedSender<KernelEvent>) -> Result<()> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&groups)
        .context("subscribing to rtnetlink multicast groups")?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let what = match &msg.payload {
                NetlinkPayload::InnerMessage(inner) => describe(inner),
                // An overrun means events were lost: ask for a full check.
                NetlinkPayload::Error(_) => Some("netlink error on the event socket".into()),
                _ => None,
            };
            if let Some(what) = what {
                if events
                    .send(KernelEvent {
                        at: Instant::now(),
                        what,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    Ok(())
}

/// Subscribes to sysctl changes in the current network namespace: forwarding and rp_filter
/// writes are announced as RTM_NEWNETCONF on the netconf groups, which the rtnetlink crate
/// cannot decode (it drops them), so they are read on a socket of their own, by a thread.
/// Without this a sysctl changed behind the agent's back waited for the periodic check.
pub fn watch_netconf(events: UnboundedSender<KernelEvent>) -> Result<()> {
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
    const RTNLGRP_IPV4_NETCONF: u32 = 24;
    const RTNLGRP_IPV6_NETCONF: u32 = 25;
    let mut sock = Socket::new(NETLINK_ROUTE).context("opening a netconf netlink socket")?;
    sock.bind_auto()
        .context("binding the netconf netlink socket")?;
    for group in [RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF] {
        sock.add_membership(group)
            .context("subscribing to the netconf groups")?;
    }
    std::thread::Builder::new()
        .name("netconf-events".into())
        .spawn(move || {
            let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
            loop {
                buf.clear();
                let what = match sock.recv_from(&mut buf, 0) {
                    Ok(_) => "sysctl changed (netconf)",
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // ENOBUFS: notifications were lost; ask for a full check.
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        "netlink error on the netconf socket"
                    }
                };
                let event = KernelEvent {
                    at: Instant::now(),
                    what: what.into(),
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        })
        .context("starting the netconf watcher")?;
    Ok(())
}
