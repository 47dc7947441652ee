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
