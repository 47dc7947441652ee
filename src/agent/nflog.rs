//! Audited flows as the gateway sees them: the compiled table logs each new connection of
//! a flow to a `transfer` service to NFLOG group 2711 with the prefix
//! `tiernet audit flow=NAME`. This reads that group over a NETLINK_NETFILTER socket and
//! turns each packet into a `FlowAudit` record for the controller's audit log.

use crate::nftables::ir::AUDIT_NFLOG_GROUP;
use crate::proto::v1::FlowAudit;
use anyhow::{bail, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Enough of the packet for the IP and transport headers.
const COPY_RANGE: u32 = 128;

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// The config message that binds this socket to `group` and asks for packet copies.
fn bind_message(group: u16) -> Vec<u8> {
    let mut body = vec![libc::AF_UNSPEC as u8, 0];
    body.extend_from_slice(&group.to_be_bytes());
    attr(&mut body, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    attr(&mut body, NFULA_CFG_MODE, &mode);
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Source, destination, protocol name and destination port of an IP packet.
fn packet_fields(p: &[u8]) -> Option<(IpAddr, IpAddr, String, u32)> {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (src.into(), dst.into(), p[9], p.get(ihl..).unwrap_or(&[]))
        }
        6 if p.len() >= 40 => {
            let a: [u8; 16] = p[8..24].try_into().ok()?;
            let b: [u8; 16] = p[24..40].try_into().ok()?;
            (
                Ipv6Addr::from(a).into(),
                Ipv6Addr::from(b).into(),
                p[6],
                &p[40..],
            )
        }
        _ => return None,
    };
    let port = match proto {
        6 | 17 if l4.len() >= 4 => u32::from(u16::from_be_bytes([l4[2], l4[3]])),
        _ => 0,
    };
    let name = match proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 | 58 => "icmp".to_string(),
        n => n.to_string(),
    };
    Some((src, dst, name, port))
}

/// Every audited-flow packet in one buffer of netlink messages.
pub fn parse(buf: &[u8], at_ms: u64) -> Vec<FlowAudit> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            let (mut prefix, mut payload) = (None, None);
            let mut a = off + 20;
            while a + 4 <= off + len {
                let alen = usize::from(u16::from_ne_bytes([buf[a], buf[a + 1]]));
                let atype = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) & 0x3fff;
                if alen < 4 || a + alen > off + len {
                    break;
                }
                let value = &buf[a + 4..a + alen];
                match atype {
                    NFULA_PREFIX => {
                        prefix = Some(
                            String::from_utf8_lossy(value)
                                .trim_end_matches('\0')
                                .to_string(),
                        )
                    }
                    NFULA_PAYLOAD => payload = Some(value),
                    _ => {}
                }
                a += (alen + 3) & !3;
            }
            let flow = prefix
                .as_deref()
                .and_then(|p| p.strip_prefix("tiernet audit flow="))
                .map(|f| f.trim().to_string());
            if let (Some(flow), Some((src, dst, protocol, port))) =
                (flow, payload.and_then(packet_fields))
            {
                out.push(FlowAudit {
                    at_ms,
                    flow,
                    source: src.to_string(),
                    destination: dst.to_string(),
                    protocol,
                    port,
                });
            }
        }
        off += (len + 3) & !3;
    }
    out
}

/// Binds to the audit group in the current network namespace and sends each record to
/// `sink` from a thread of its own, until the receiver is gone.
pub fn watch(sink: impl Fn(FlowAudit) -> bool + Send + 'static) -> Result<()> {
    // SAFETY: plain socket calls on a descriptor this function owns; buffers outlive them.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        bail!(
            "NETLINK_NETFILTER socket: {}",
            std::io::Error::last_os_error()
        );
    }
    let msg = bind_message(AUDIT_NFLOG_GROUP);
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    let sent = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        let e = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        bail!("binding NFLOG group {AUDIT_NFLOG_GROUP}: {e}");
    }
    std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        tracing::warn!("NFLOG records lost (receive buffer overrun)");
                        continue;
                    }
                    tracing::error!(error = %e, "NFLOG socket failed; flow audit records stop");
                    break;
                }
                let at_ms = crate::controller::store::now_ms();
                for rec in parse(&buf[..n as usize], at_ms) {
                    if !sink(rec) {
                        unsafe { libc::close(fd) };
                        return;
                    }
                }
            }
            unsafe { libc::close(fd) };
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NFULNL_MSG_PACKET as the kernel sends it: prefix and an IPv4/TCP payload.
    fn packet(prefix: &str) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 2, 10, 50, 10, 3, 20, 20,
        ];
        ip.extend_from_slice(&[0xc0, 0x00, 0x00, 22]); // ports 49152 -> 22
        ip.extend_from_slice(&[0; 16]);
        let mut body = vec![libc::AF_INET as u8, 0, 0x0a, 0xa7];
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        attr(&mut body, NFULA_PREFIX, &p);
        attr(&mut body, NFULA_PAYLOAD, &ip);
        let mut msg = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn audited_flow_packet_becomes_a_record() {
        let mut buf = packet("tiernet audit flow=reviewed-download ");
        buf.extend(packet("someone else's log"));
        let recs = parse(&buf, 7);
        assert_eq!(recs.len(), 1, "only tiernet's audit prefix counts");
        let r = &recs[0];
        assert_eq!(
            (r.flow.as_str(), r.source.as_str(), r.destination.as_str()),
            ("reviewed-download", "10.2.10.50", "10.3.20.20")
        );
        assert_eq!((r.protocol.as_str(), r.port, r.at_ms), ("tcp", 22, 7));
    }

    #[test]
    fn truncated_input_is_ignored() {
        let buf = packet("tiernet audit flow=x ");
        assert!(parse(&buf[..buf.len() - 30], 0).is_empty());
        assert!(parse(&[1, 2, 3], 0).is_empty());
    }
}
