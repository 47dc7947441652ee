//! A NETLINK_NETFILTER socket: open it, size its buffers, send a whole batch in ONE
//! `sendmsg` (nfnetlink only treats BEGIN..END as a transaction inside a single skb) and
//! collect the kernel's errors, run dumps, join the nftables multicast group.

use super::wire::{
    self, Msg, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK_TLVS,
};
use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
/// nfnetlink fills dump skbs up to 32 KiB; notifications and errors are smaller.
const RECV_BUF: usize = 1 << 20;

/// The kernel's answer to one message of a batch.
#[derive(Debug, Clone)]
pub struct KernelError {
    /// Sequence number of the message it refers to.
    pub seq: u32,
    pub errno: i32,
    /// Extended ack: the kernel's text, if it gave one.
    pub text: Option<String>,
    /// Extended ack: offset of the offending attribute from the start of that message.
    pub offset: Option<u32>,
}

impl KernelError {
    pub fn describe_errno(&self) -> String {
        format!(
            "{} (errno {})",
            io::Error::from_raw_os_error(self.errno),
            self.errno
        )
    }
}

/// How a batch ended.
#[derive(Debug)]
pub enum BatchError {
    /// `sendmsg` itself failed: nothing reached nf_tables.
    Send(io::Error),
    /// nf_tables refused the batch: it was aborted as a whole.
    Refused(Vec<KernelError>),
    /// Errors overflowed the receive buffer; the batch failed (success sends at most acks).
    Overrun { seen: Vec<KernelError> },
}

pub struct NlSocket {
    fd: OwnedFd,
    portid: u32,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: `val` lives across the call and its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl NlSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<NlSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error())
                .context("socket(AF_NETLINK, NETLINK_NETFILTER)");
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (kernel-chosen portid).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let salen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `sa` is a valid sockaddr_nl of the length passed.
        if unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, salen) } < 0 {
            return Err(io::Error::last_os_error()).context("binding the netlink socket");
        }
        let mut len = salen;
        // SAFETY: getsockname writes at most `len` bytes into `sa`.
        if unsafe { libc::getsockname(raw, &mut sa as *mut _ as *mut libc::sockaddr, &mut len) } < 0
        {
            return Err(io::Error::last_os_error()).context("reading the netlink port id");
        }
        // Errors then carry only the header of the failing message, plus the kernel's
        // extended ack (text or attribute offset). Both are best effort on old kernels.
        let _ = setsockopt_int(raw, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let _ = setsockopt_int(raw, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NlSocket {
            fd,
            portid: sa.nl_pid,
            seq,
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// The first sequence number of the next request or batch.
    pub fn next_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    /// Marks `n` sequence numbers from `next_seq()` on as used.
    pub fn advance_seq(&mut self, n: usize) {
        self.seq = self.seq.wrapping_add(n as u32);
    }

    /// SO_*BUFFORCE (CAP_NET_ADMIN) with a fallback to the capped variants.
    pub fn set_rcvbuf(&self, bytes: usize) -> Result<()> {
        let v = bytes.min(i32::MAX as usize / 2) as i32;
        let fd = self.fd.as_raw_fd();
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)
            .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v))
            .context("setting the netlink receive buffer")
    }

    /// Netlink refuses a `sendmsg` larger than the send buffer (EMSGSIZE), and a batch must
    /// go in one `sendmsg`: grow the buffer to fit.
    fn ensure_sndbuf(&mut self, bytes: usize) -> Result<()> {
        let want = (bytes + (1 << 16)).max(4 << 20);
        if self.sndbuf >= want {
            return Ok(());
        }
        let v = (want * 2).min(i32::MAX as usize / 2) as i32;
        let fd = self.fd.as_raw_fd();
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
            .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v))
            .with_context(|| format!("growing the netlink send buffer for a {bytes}-byte batch"))?;
        self.sndbuf = want;
        Ok(())
    }

    pub fn join_group(&self, group: u32) -> Result<()> {
        setsockopt_int(
            self.fd.as_raw_fd(),
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            group as i32,
        )
        .with_context(|| format!("joining netlink multicast group {group}"))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: the sockaddr, iovec and msghdr point at live locals/`bytes` for the call.
        unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let mut iov = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_name = &mut sa as *mut _ as *mut libc::c_void;
            mh.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            let r = libc::sendmsg(self.fd.as_raw_fd(), &mh, 0);
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        }
    }

    /// One datagram into the internal buffer; its length. MSG_TRUNC reports the real size,
    /// so a datagram that did not fit is an error rather than silently cut.
    fn recv(&mut self, dontwait: bool) -> io::Result<usize> {
        let flags = libc::MSG_TRUNC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: the kernel writes at most `self.buf.len()` bytes into `self.buf`.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    flags,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = r as usize;
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "netlink datagram of {n} bytes exceeds the {}-byte receive buffer",
                    self.buf.len()
                )));
            }
            return Ok(n);
        }
    }

    /// Waits until a datagram is readable or `timeout_ms` passed.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }

    /// Receives one datagram without blocking (None when nothing is queued) and hands its
    /// messages to `each`.
    pub fn recv_messages(
        &mut self,
        dontwait: bool,
        mut each: impl FnMut(&Msg),
    ) -> io::Result<Option<()>> {
        let n = match self.recv(dontwait) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let msgs =
            wire::messages(&self.buf[..n]).map_err(|e| io::Error::other(format!("{e:#}")))?;
        for m in &msgs {
            each(m);
        }
        Ok(Some(()))
    }

    /// Discards whatever is still queued (answers to an earlier, interrupted request).
    fn drain(&mut self) {
        while let Ok(Some(())) = self.recv_messages(true, |_| {}) {}
    }

    /// Sends a complete batch (BEGIN..END, sequence numbers `seqs`) in one `sendmsg`.
    /// nfnetlink processes it synchronously inside the call, so every error is already
    /// queued when `sendmsg` returns; a successful batch produces no error at all.
    pub fn send_batch(
        &mut self,
        batch: &[u8],
        seqs: std::ops::Range<u32>,
    ) -> Result<usize, BatchError> {
        self.ensure_sndbuf(batch.len())
            .map_err(|e| BatchError::Send(io::Error::other(format!("{e:#}"))))?;
        self.drain();
        self.send(batch).map_err(BatchError::Send)?;
        let mut errors = Vec::new();
        let mut acks = 0;
        loop {
            let mut parse_failure = None;
            let got = self.recv_messages(true, |m| {
                if m.ty != NLMSG_ERROR {
                    return;
                }
                match parse_error(m) {
                    Ok(e) if e.errno == 0 => acks += 1,
                    Ok(e) if seqs.contains(&e.seq) || e.seq == 0 => errors.push(e),
                    Ok(_) => {} // a stale answer to an earlier request
                    Err(err) => parse_failure = Some(err),
                }
            });
            if let Some(err) = parse_failure {
                errors.push(KernelError {
                    seq: 0,
                    errno: libc::EPROTO,
                    text: Some(format!("{err:#}")),
                    offset: None,
                });
            }
            match got {
                Ok(Some(())) => continue,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(BatchError::Overrun { seen: errors })
                }
                Err(e) => return Err(BatchError::Send(e)),
            }
        }
        if errors.is_empty() {
            Ok(acks)
        } else {
            Err(BatchError::Refused(errors))
        }
    }

    /// Sends one request and hands every answer message to `each` until NLMSG_DONE (dumps)
    /// or, with `until_reply`, until the first message of the request's sequence number.
    /// An NLMSG_ERROR with an errno is the request's failure.
    pub fn request(
        &mut self,
        req: &[u8],
        seq: u32,
        until_reply: bool,
        mut each: impl FnMut(&Msg) -> Result<()>,
    ) -> Result<()> {
        self.drain();
        self.send(req).context("sending a netlink request")?;
        loop {
            let n = self.recv(false).context("receiving a netlink answer")?;
            let msgs = wire::messages(&self.buf[..n])?;
            for m in &msgs {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let e = parse_error(m)?;
                        if e.errno != 0 {
                            return Err(anyhow!("{}", e.describe_errno()));
                        }
                        return Ok(());
                    }
                    _ => {
                        each(m)?;
                        if until_reply {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

/// An NLMSG_ERROR payload: errno (negative), the offending header, then extack TLVs.
fn parse_error(m: &Msg) -> Result<KernelError> {
    let p = m.payload;
    if p.len() < 4 + wire::NLMSG_HDRLEN {
        bail!("short NLMSG_ERROR ({} bytes)", p.len());
    }
    let err = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
    let seq = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
    let mut e = KernelError {
        seq,
        errno: err.saturating_neg(),
        text: None,
        offset: None,
    };
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK only the original header is echoed, so TLVs follow it;
        // without, the whole original message sits in between: its length says how much.
        let orig_len = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as usize;
        let capped = m.flags & 0x100 != 0; // NLM_F_CAPPED
        let tlv_at = 4 + if capped {
            wire::NLMSG_HDRLEN
        } else {
            orig_len.max(wire::NLMSG_HDRLEN)
        };
        if let Some(tlvs) = p.get(tlv_at..) {
            if let Ok(a) = wire::Attrs::parse(tlvs) {
                e.text = a
                    .get(NLMSGERR_ATTR_MSG)
                    .map(wire::strz)
                    .filter(|s| !s.is_empty());
                e.offset = a
                    .get(NLMSGERR_ATTR_OFFS)
                    .and_then(|d| d.get(..4))
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
    }
    Ok(e)
}
