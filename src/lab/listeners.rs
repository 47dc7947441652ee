//! What probes connect to: TCP listeners that accept and close, and UDP echo responders,
//! each bound inside its host's namespace and all served by one polling thread.

use crate::netns;
use crate::topology::Proto;
use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn fd(&self) -> i32 {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Udp(u) => u.as_raw_fd(),
        }
    }

    /// Accepts (and closes) every pending connection, or echoes every pending datagram.
    fn serve(&self) {
        let mut buf = [0u8; 2048];
        match self {
            Listener::Tcp(l) => while l.accept().is_ok() {},
            Listener::Udp(u) => {
                while let Ok((n, from)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], from);
                }
            }
        }
    }
}

/// A socket on every address of both families where the namespace has IPv6, else IPv4 only.
fn bind(proto: Proto, port: u16) -> Result<Listener> {
    let ty = if proto == Proto::Tcp {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let p = if proto == Proto::Tcp {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let make = |domain: Domain, addr: SocketAddr| -> std::io::Result<Socket> {
        let s = Socket::new(domain, ty, Some(p))?;
        if domain == Domain::IPV6 {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&SockAddr::from(addr))?;
        if proto == Proto::Tcp {
            s.listen(128)?;
        }
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let s = make(
        Domain::IPV6,
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    )
    .or_else(|_| {
        make(
            Domain::IPV4,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        )
    })
    .with_context(|| format!("listening on {}/{port}", proto.name()))?;
    Ok(match proto {
        Proto::Tcp => Listener::Tcp(s.into()),
        _ => Listener::Udp(s.into()),
    })
}

/// Running listeners; dropping this stops them and closes their sockets.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub count: usize,
}

/// Starts listeners: per namespace, the (protocol, port) pairs to serve.
pub fn start(spec: &[(String, Vec<(Proto, u16)>)]) -> Result<Listeners> {
    let mut all = Vec::new();
    for (ns, ports) in spec {
        let bound = netns::run_in(ns, || {
            ports
                .iter()
                .map(|&(proto, port)| bind(proto, port))
                .collect::<Result<Vec<_>>>()
        })
        .with_context(|| format!("starting listeners in {ns}"))?;
        all.extend(bound);
    }
    if all.is_empty() {
        bail!("nothing to listen on");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let count = all.len();
    let thread = std::thread::Builder::new()
        .name("lab-listeners".into())
        .spawn(move || {
            let mut fds: Vec<libc::pollfd> = all
                .iter()
                .map(|l| libc::pollfd {
                    fd: l.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                if n <= 0 {
                    continue;
                }
                for (pfd, l) in fds.iter_mut().zip(&all) {
                    if pfd.revents != 0 {
                        l.serve();
                        pfd.revents = 0;
                    }
                }
            }
        })
        .context("starting the listener thread")?;
    Ok(Listeners {
        stop,
        thread: Some(thread),
        count,
    })
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
