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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// TCP handshake completed.
    Connected,
    /// UDP datagram or ICMP echo came back.
    Echoed,
    /// Nothing came back in time (what a drop looks like).
    Timeout,
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
            Observed::Timeout => format!("no answer within {} ms", TIMEOUT.as_millis()),
            Observed::Refused => "refused (nothing listening)".into(),
            Observed::Unreachable(e) => format!("unreachable: {e}"),
            Observed::Error(e) => format!("probe failed: {e}"),
        }
    }
}

fn failure(e: std::io::Error) -> Observed {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Observed::Timeout,
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

pub fn probe(src: IpAddr, dst: IpAddr, port: PortSpec) -> Observed {
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
        Proto::Tcp => tcp(s, dst, port.lo),
        Proto::Udp => udp(s.into(), src, dst, port.lo),
        Proto::Icmp => icmp(s.into(), dst),
    };
    r.unwrap_or_else(failure)
}

fn tcp(s: Socket, dst: IpAddr, port: u16) -> std::io::Result<Observed> {
    s.connect_timeout(&SockAddr::from(SocketAddr::new(dst, port)), TIMEOUT)?;
    Ok(Observed::Connected)
}

/// Sends `payload` (twice, half the timeout apart, in case the first is lost) and waits
/// for an answer that `is_answer` accepts.
fn exchange(
    sock: &UdpSocket,
    payload: &[u8],
    is_answer: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Observed> {
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 2048];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= TIMEOUT {
            return Ok(Observed::Timeout);
        }
        if sent == 0 || (sent == 1 && elapsed >= TIMEOUT / 2) {
            sock.send(payload)?;
            sent += 1;
        }
        let wait = if sent == 1 { TIMEOUT / 2 } else { TIMEOUT }
            .saturating_sub(elapsed)
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv(&mut buf) {
            Ok(n) if is_answer(&buf[..n]) => return Ok(Observed::Echoed),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
}

fn udp(s: UdpSocket, src: IpAddr, dst: IpAddr, port: u16) -> std::io::Result<Observed> {
    s.connect(SocketAddr::new(dst, port))?;
    let payload = format!("tiernet lab probe {src} -> {dst} udp/{port}");
    exchange(&s, payload.as_bytes(), |answer| {
        answer == payload.as_bytes()
    })
}

/// An echo request over a ping socket: the kernel fills in the identifier and the
/// checksum and hands back only replies to this socket.
fn icmp(s: UdpSocket, dst: IpAddr) -> std::io::Result<Observed> {
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
    exchange(&s, &packet, |answer| {
        answer.len() >= 8 && answer[0] == reply && answer[6..8] == seq.to_be_bytes()
    })
}
