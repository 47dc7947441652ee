//! Each gateway's standing against the current revision.

use super::Controller;
use crate::proto::v1::GatewayStatus;

pub const IN_SYNC: &str = "IN_SYNC";
pub const DRIFTED: &str = "DRIFTED";
pub const UNREACHABLE: &str = "UNREACHABLE";
/// Connected, but not (yet) on the current revision.
pub const PENDING: &str = "PENDING";

/// Gateways of the current revision, then any other connected agent (before the first
/// revision, or one that a new topology no longer names).
pub fn gateways(ctl: &Controller) -> Vec<GatewayStatus> {
    let current = ctl.current();
    let mut names: Vec<String> = current
        .as_ref()
        .map(|r| r.gateway_names())
        .unwrap_or_default();
    for c in ctl.hub.connected() {
        if !names.contains(&c) {
            names.push(c);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let desired = current.as_ref().and_then(|r| {
                r.gateway(&name)
                    .map(|g| (r.id, crate::proto::state_digest(g)))
            });
            let Some(conn) = ctl.hub.view(&name) else {
                return GatewayStatus {
                    gateway: name,
                    state: UNREACHABLE.into(),
                    detail: "no stream from its agent".into(),
                    ..Default::default()
                };
            };
            let r = &conn.report;
            let (state, detail) = if !r.in_sync {
                (
                    DRIFTED,
                    conn.drift
                        .clone()
                        .unwrap_or_else(|| "the agent reports drift it has not reverted".into()),
                )
            } else {
                match desired {
                    Some((id, digest)) if r.applied_revision == id && r.state_digest == digest => {
                        (IN_SYNC, String::new())
                    }
                    Some((id, _)) => (
                        PENDING,
                        format!("on revision {}, not {id}", r.applied_revision),
                    ),
                    None if current.is_none() && r.applied_revision == 0 => (
                        PENDING,
                        "no revision applied yet; on its pre-controller state (revision 0)".into(),
                    ),
                    None if current.is_none() => (
                        PENDING,
                        format!(
                            "no revision applied yet, but it reports revision {}",
                            r.applied_revision
                        ),
                    ),
                    None => (PENDING, "not part of the current revision".into()),
                }
            };
            GatewayStatus {
                gateway: name,
                state: state.into(),
                applied_revision: r.applied_revision,
                connected: true,
                detail,
                last_seen_ms: conn.last_seen_ms,
            }
        })
        .collect()
}
