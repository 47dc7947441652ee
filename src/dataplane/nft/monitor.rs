//! nftables change notifications (NFNLGRP_NFTABLES) turned into `KernelEvent`s.
//!
//! The kernel sends one notification per changed object, then NFT_MSG_NEWGEN with the
//! committing process's pid and name. Notifications carry the committer's netlink port id,
//! so a commit made through one of this process's `NftSession` sockets is recognised
//! exactly: its events end in "(own)". Events are held until NEWGEN and coalesced per
//! object (a 10,000-element replace is one line per set, not 10,000).

use super::socket::NlSocket;
use super::wire::{self, attr, msg, Attrs, Msg};
use crate::dataplane::monitor::KernelEvent;
use anyhow::{Context, Result};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

const NFNLGRP_NFTABLES: u32 = 7;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_DELOBJ: u16 = 20;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_DELFLOWTABLE: u16 = 24;
/// Distinct objects reported per transaction; the rest is summed up in one event.
const MAX_GROUPS: usize = 64;

/// (network namespace, netlink port id) of every open `NftSession` of this process.
static SESSIONS: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

/// Identity of the calling thread's network namespace (its nsfs inode).
pub(super) fn current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

pub(super) fn register_session(netns: u64, portid: u32) {
    if let Ok(mut s) = SESSIONS.lock() {
        s.push((netns, portid));
    }
}

pub(super) fn unregister_session(netns: u64, portid: u32) {
    if let Ok(mut s) = SESSIONS.lock() {
        if let Some(i) = s.iter().position(|x| *x == (netns, portid)) {
            s.remove(i);
        }
    }
}

fn is_session(netns: u64, portid: u32) -> bool {
    SESSIONS
        .lock()
        .map(|s| s.contains(&(netns, portid)))
        .unwrap_or(false)
}

/// Subscribes to nftables notifications in the calling thread's network namespace, on a
/// socket and thread of their own, and sends a `KernelEvent` for every change to
/// `inet <table_name>`, every table created or deleted and every base chain added or
/// removed anywhere, until `events` is closed.
pub fn watch_nft(table_name: &str, events: UnboundedSender<KernelEvent>) -> Result<()> {
    let sock = NlSocket::open().context("opening the nftables notification socket")?;
    // A big replace notifies once per object: room for tens of thousands of them.
    if let Err(e) = sock.set_rcvbuf(32 << 20) {
        tracing::debug!("nft watch: {e:#}");
    }
    sock.join_group(NFNLGRP_NFTABLES)
        .context("subscribing to nftables notifications")?;
    let w = Watcher {
        table: table_name.to_string(),
        netns: current_netns(),
        pending: Vec::new(),
        more: 0,
        events,
    };
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || w.run(sock))
        .context("starting the nftables watch thread")?;
    Ok(())
}

struct Group {
    what: String,
    count: usize,
}

struct Watcher {
    table: String,
    netns: u64,
    pending: Vec<Group>,
    more: usize,
    events: UnboundedSender<KernelEvent>,
}

impl Watcher {
    fn send(&self, what: String) -> bool {
        self.events
            .send(KernelEvent {
                at: Instant::now(),
                what,
            })
            .is_ok()
    }

    fn run(mut self, mut sock: NlSocket) {
        loop {
            if self.events.is_closed() {
                return;
            }
            match sock.wait_readable(500) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    self.send(format!("nft: watching notifications failed: {e}"));
                    return;
                }
            }
            let mut msgs = Vec::new();
            let got = sock.recv_messages(true, |m| msgs.push(Owned::of(m)));
            for m in &msgs {
                if !self.handle(m) {
                    return;
                }
            }
            match got {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.pending.clear();
                    self.more = 0;
                    if !self.send(
                        "nft: notifications lost (receive buffer overrun); state must be re-read"
                            .into(),
                    ) {
                        return;
                    }
                }
                Err(e) => {
                    self.send(format!("nft: reading notifications failed: {e}"));
                    return;
                }
            }
        }
    }

    /// False when the receiver is gone.
    fn handle(&mut self, m: &Owned) -> bool {
        let Ok(ms) = wire::messages(&m.0) else {
            return true;
        };
        let Some(m) = ms.first() else { return true };
        if !m.is_nftables() {
            return true;
        }
        if m.nft_msg() == msg::NEWGEN {
            return self.commit(m);
        }
        if let Some((what, count)) = self.describe(m) {
            let room = self.pending.len() < MAX_GROUPS;
            match self.pending.iter_mut().find(|g| g.what == what) {
                Some(g) => g.count += count,
                None if room => self.pending.push(Group { what, count }),
                None => self.more += count,
            }
        }
        true
    }

    /// NEWGEN closes a transaction: report what it changed, with who committed it.
    fn commit(&mut self, m: &Msg) -> bool {
        let a = m.attrs().unwrap_or_default();
        let pid = a.u32(attr::GEN_PROC_PID);
        let name = a.str(attr::GEN_PROC_NAME);
        let by = match (pid, name) {
            (Some(p), Some(n)) => format!("by pid {p} ({n})"),
            (Some(p), None) => format!("by pid {p}"),
            _ => "by an unknown process".to_string(),
        };
        let own = if is_session(self.netns, m.pid) {
            " (own)"
        } else {
            ""
        };
        let mut groups = std::mem::take(&mut self.pending);
        if self.more > 0 {
            groups.push(Group {
                what: "more changes".into(),
                count: self.more,
            });
            self.more = 0;
        }
        for g in groups {
            let n = if g.count > 1 {
                format!(" ({} changes)", g.count)
            } else {
                String::new()
            };
            if !self.send(format!("nft: {}{n} {by}{own}", g.what)) {
                return false;
            }
        }
        true
    }

    /// "NEWRULE in inet tiernet forward" for a change that matters, with its count.
    fn describe(&self, m: &Msg) -> Option<(String, usize)> {
        let kind = m.nft_msg();
        let a = m.attrs().ok()?;
        let family = wire::family_name(m.family());
        let ours = |table: &str| m.family() == wire::NFPROTO_INET && table == self.table;
        let name = msg::name(kind);
        match kind {
            msg::NEWTABLE | msg::DELTABLE => {
                let t = a.str(attr::TABLE_NAME)?;
                Some((format!("{name} {family} {t}"), 1))
            }
            msg::NEWCHAIN | msg::DELCHAIN => {
                let t = a.str(attr::CHAIN_TABLE)?;
                let c = a.str(attr::CHAIN_NAME).unwrap_or_default();
                let hook = a
                    .nested(attr::CHAIN_HOOK)
                    .ok()
                    .flatten()
                    .and_then(|h| h.u32(attr::HOOK_HOOKNUM));
                match hook {
                    Some(h) => Some((
                        format!(
                            "{name} in {family} {t} {c} (base chain, hook {})",
                            wire::hook_name(m.family(), h)
                        ),
                        1,
                    )),
                    None if ours(&t) => Some((format!("{name} in {family} {t} {c}"), 1)),
                    None => None,
                }
            }
            msg::NEWRULE | msg::DELRULE => {
                let t = a.str(attr::RULE_TABLE)?;
                ours(&t).then(|| {
                    (
                        format!(
                            "{name} in {family} {t} {}",
                            a.str(attr::RULE_CHAIN).unwrap_or_default()
                        ),
                        1,
                    )
                })
            }
            msg::NEWSET | msg::DELSET => {
                let t = a.str(attr::SET_TABLE)?;
                ours(&t).then(|| {
                    (
                        format!(
                            "{name} in {family} {t} {}",
                            a.str(attr::SET_NAME).unwrap_or_default()
                        ),
                        1,
                    )
                })
            }
            msg::NEWSETELEM | msg::DELSETELEM => {
                let t = a.str(attr::SET_ELEM_LIST_TABLE)?;
                let n = a
                    .nested(attr::SET_ELEM_LIST_ELEMENTS)
                    .ok()
                    .flatten()
                    .map(|l: Attrs| l.list.len())
                    .unwrap_or(1);
                ours(&t).then(|| {
                    (
                        format!(
                            "{name} in {family} {t} {}",
                            a.str(attr::SET_ELEM_LIST_SET).unwrap_or_default()
                        ),
                        n,
                    )
                })
            }
            NFT_MSG_NEWOBJ | NFT_MSG_DELOBJ | NFT_MSG_NEWFLOWTABLE | NFT_MSG_DELFLOWTABLE => {
                let t = a.str(1)?;
                ours(&t).then(|| {
                    (
                        format!("{name} in {family} {t} {}", a.str(2).unwrap_or_default()),
                        1,
                    )
                })
            }
            _ => None,
        }
    }
}

/// A received message copied out of the socket's buffer.
struct Owned(Vec<u8>);

impl Owned {
    fn of(m: &Msg) -> Owned {
        Owned(m.raw.to_vec())
    }
}
