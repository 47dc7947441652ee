//! Real connection attempts from the calling thread's namespace: a TCP connect, a UDP
//! datagram answered by the echo responder, an ICMP echo over an unprivileged ping socket.

use crate::topology::{PortSpec, Proto};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long a probe waits for an answer before calling the path closed.
pub const TIMEOUT: Duration = Duration::from_millis(300);
/// The second, patient look at a path that should be open but did not answer in time
/// (a busy machine, not a firewall).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// TCP handshake completed.
    Connected,
    /// UDP datagram or ICMP echo came back.
    Echoed,
    /// Nothing came back within `ms` milliseconds (what a drop looks like).
    Timeout { ms: u64 },
    /// A TCP reset or ICMP port unreachable: the packet got somewhere, but nothing listens.
    Refused,
    /// An ICMP error (no route, host unreachable, administratively prohibited, ...).
    Unreachable(String),
    /// The probe could not even be sent.
    Error(String),
}

impl Observed {
    pub fn passed(&self) -> bool {
        matches!(self, Observed::Connected | Observed::Echoed)
    }

    pub fn describe(&self) -> String {
        match self {
            Observed::Connected => "connected".into(),
            Observed::Echoed => "echo came back".into(),
            Observed::Timeout { ms } => format!("no answer within {ms} ms"),
            Observed::Refused => "refused (nothing listening)".into(),
            Observed::Unreachable(e) => format!("unreachable: {e}"),
            Observed::Error(e) => format!("probe failed: {e}"),
        }
    }
}

fn failure(e: std::io::Error, timeout: Duration) -> Observed {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Observed::Timeout {
            ms: timeout.as_millis() as u64,
        },
        ErrorKind::ConnectionRefused => Observed::Refused,
        _ => match e.raw_os_error() {
            Some(
                libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM | libc::EPROTO,
            ) => Observed::Unreachable(e.to_string()),
            _ => Observed::Error(e.to_string()),
        },
    }
}

fn domain(a: &IpAddr) -> Domain {
    if a.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A socket bound to `src`, so the packet carries the address `reach` reasoned about.
fn socket(src: IpAddr, dst: IpAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(domain(&dst), ty, Some(proto))?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    Ok(s)
}

/// One probe from `src` to `dst` on `port`, waiting at most `timeout` for an answer.
pub fn probe(src: IpAddr, dst: IpAddr, port: PortSpec, timeout: Duration) -> Observed {
    let (ty, proto) = match port.proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Icmp if dst.is_ipv4() => (Type::DGRAM, Protocol::ICMPV4),
        Proto::Icmp => (Type::DGRAM, Protocol::ICMPV6),
    };
    // A socket that cannot be made says nothing about the path: an error, not a "closed".
    let s = match socket(src, dst, ty, proto) {
        Ok(s) => s,
        Err(e) => return Observed::Error(format!("{} socket from {src}: {e}", port.proto.name())),
    };
    let r = match port.proto {
        Proto::Tcp => s
            .connect_timeout(&SockAddr::from(SocketAddr::new(dst, port.lo)), timeout)
            .map(|()| Observed::Connected),
        Proto::Udp => udp(s.into(), src, dst, port.lo, timeout),
        Proto::Icmp => icmp(s.into(), dst, timeout),
    };
    r.unwrap_or_else(|e| failure(e, timeout))
}

/// Sends `payload` (twice, half the timeout apart, in case the first is lost) and waits
/// for an answer that `is_answer` accepts.
fn exchange(
    sock: &UdpSocket,
    payload: &[u8],
    timeout: Duration,
    is_answer: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Observed> {
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 2048];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Ok(Observed::Timeout {
                ms: timeout.as_millis() as u64,
            });
        }
        if sent == 0 || (sent == 1 && elapsed >= timeout / 2) {
            sock.send(payload)?;
            sent += 1;
        }
        let until = if sent == 1 { timeout / 2 } else { timeout };
        sock.set_read_timeout(Some(
            until.saturating_sub(elapsed).max(Duration::from_millis(1)),
        ))?;
        match sock.recv(&mut buf) {
            Ok(n) if is_answer(&buf[..n]) => return Ok(Observed::Echoed),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
}

fn udp(
    s: UdpSocket,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> std::io::Result<Observed> {
    s.connect(SocketAddr::new(dst, port))?;
    let payload = format!("tiernet lab probe {src} -> {dst} udp/{port}");
    exchange(&s, payload.as_bytes(), timeout, |answer| {
        answer == payload.as_bytes()
    })
}

/// An echo request over a ping socket: the kernel fills in the identifier and the
/// checksum and hands back only replies to this socket.
fn icmp(s: UdpSocket, dst: IpAddr, timeout: Duration) -> std::io::Result<Observed> {
    let (request, reply) = if dst.is_ipv4() {
        (8u8, 0u8)
    } else {
        (128, 129)
    };
    s.connect(SocketAddr::new(dst, 0))?;
    let seq: u16 = 1;
    let mut packet = vec![request, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"tiernet lab probe");
    exchange(&s, &packet, timeout, |answer| {
        answer.len() >= 8 && answer[0] == reply && answer[6..8] == seq.to_be_bytes()
    })
}
