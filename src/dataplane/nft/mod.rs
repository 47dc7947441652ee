//! tiernet's nftables table in the kernel, over nf_tables netlink directly: replace it in one
//! transaction, read it back in canonical form, delete it, and watch for changes.
//!
//! * `socket`: the NETLINK_NETFILTER socket (one `sendmsg` per batch, errors, dumps);
//! * `wire`: message and attribute encoding and parsing;
//! * `encode`: the IR as the batch `nft -f` would send for `text::render_table`;
//! * `decode`: dumps (and our own batches) as canonical lines;
//! * `monitor`: notifications as `KernelEvent`s.

mod decode;
mod encode;
mod monitor;
mod socket;
#[cfg(test)]
mod tests;
mod wire;

pub use monitor::watch_nft;

use crate::nftables::ir::Table;
use crate::plan::observed::{ForeignChain, ObservedNft};
use anyhow::{anyhow, bail, Context, Result};
use encode::{Batch, NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST};
use socket::{BatchError, KernelError, NlSocket};
use std::time::{Duration, Instant};
use wire::{attr, msg, nft_type, Writer};

/// One long-lived NETLINK_NETFILTER socket. With the OWNER flag the kernel lets only this
/// socket (not even another socket of this process) modify the table while it is open.
pub struct NftSession {
    sock: NlSocket,
    /// Table flags `replace` sets: OWNER|PERSIST, less what the kernel turned out to lack.
    flags: u32,
    netns: u64,
}

#[derive(Debug, Clone)]
pub struct ReplaceStats {
    /// Netlink messages in the batch, BATCH_BEGIN and BATCH_END included.
    pub messages: usize,
    pub bytes: usize,
    /// Encoding, sending and the kernel's commit.
    pub elapsed: Duration,
    pub owner: bool,
    pub persist: bool,
}

/// Reading the ruleset is retried when it changed in between (a dump is not atomic).
const OBSERVE_ATTEMPTS: usize = 5;

impl NftSession {
    /// `owner`: set NFT_TABLE_F_OWNER (+ PERSIST where supported) so no other process can
    /// alter the table.
    pub fn open(owner: bool) -> Result<NftSession> {
        let sock = NlSocket::open()?;
        // Room for the kernel's error reports on a large refused batch.
        if let Err(e) = sock.set_rcvbuf(16 << 20) {
            tracing::debug!("nft session: {e:#}");
        }
        let mut s = NftSession {
            sock,
            flags: if owner {
                NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST
            } else {
                0
            },
            netns: monitor::current_netns(),
        };
        s.generation()
            .context("nf_tables does not answer (is the nf_tables module available?)")?;
        monitor::register_session(s.netns, s.sock.portid());
        Ok(s)
    }

    /// Replaces `table inet <table.name>` with `table` in ONE transaction (all or nothing).
    /// Creates it if absent; re-adopts an orphaned persisted table. On kernels without
    /// OWNER/PERSIST support it goes on without the missing flag, says so once with
    /// `tracing::warn!`, and remembers.
    pub fn replace(&mut self, table: &Table) -> Result<ReplaceStats> {
        let started = Instant::now();
        let mut dropped: Vec<(&str, i32)> = Vec::new();
        loop {
            let batch = encode::replace(table, self.flags, self.sock.next_seq())
                .with_context(|| format!("encoding table inet {}", table.name))?;
            self.sock.advance_seq(batch.labels.len());
            match self.sock.send_batch(&batch.bytes, batch.seqs()) {
                Ok(_) => {
                    if !dropped.is_empty() {
                        let what: Vec<String> = dropped
                            .iter()
                            .map(|(f, e)| {
                                format!("{f} ({})", std::io::Error::from_raw_os_error(*e))
                            })
                            .collect();
                        tracing::warn!(
                            "nftables: this kernel does not support the table flag {}; table inet {} is applied without it{}",
                            what.join(" and "),
                            table.name,
                            if self.flags & NFT_TABLE_F_OWNER == 0 {
                                ", so other processes can change it"
                            } else {
                                ", so it is removed when this process exits"
                            }
                        );
                    }
                    return Ok(ReplaceStats {
                        messages: batch.labels.len(),
                        bytes: batch.bytes.len(),
                        elapsed: started.elapsed(),
                        owner: self.flags & NFT_TABLE_F_OWNER != 0,
                        persist: self.flags & NFT_TABLE_F_PERSIST != 0,
                    });
                }
                Err(BatchError::Refused(errors)) => {
                    if let Some((flags, flag, errno)) =
                        without_unsupported(self.flags, &batch, &errors)
                    {
                        self.flags = flags;
                        dropped.push((flag, errno));
                        continue;
                    }
                    return Err(refused(
                        &format!("replacing table inet {}", table.name),
                        &batch,
                        &errors,
                        table,
                    ));
                }
                Err(e) => {
                    return Err(batch_failure(
                        &format!("replacing table inet {}", table.name),
                        e,
                    ))
                }
            }
        }
    }

    /// Deletes our table (for `agent --cleanup` and tests). Ok if absent.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        let batch = encode::delete(name, self.sock.next_seq())?;
        self.sock.advance_seq(batch.labels.len());
        let doing = format!("deleting table inet {name}");
        match self.sock.send_batch(&batch.bytes, batch.seqs()) {
            Ok(_) => Ok(()),
            Err(BatchError::Refused(errors)) => {
                let empty = Table {
                    name: name.to_string(),
                    sets: vec![],
                    chains: vec![],
                };
                Err(refused(&doing, &batch, &errors, &empty))
            }
            Err(e) => Err(batch_failure(&doing, e)),
        }
    }

    /// The kernel's state: our table in canonical form (None if absent) and every base chain
    /// of OTHER tables on a forward or input hook.
    pub fn observe(&mut self, table_name: &str) -> Result<ObservedNft> {
        for _ in 0..OBSERVE_ATTEMPTS {
            let before = self.generation()?;
            let (observed, interrupted) = self.read(table_name)?;
            if !interrupted && self.generation()? == before {
                return Ok(observed);
            }
        }
        bail!("the nftables ruleset kept changing while it was read ({OBSERVE_ATTEMPTS} attempts)")
    }

    /// The canonical form of a desired table: the batch `replace` would send, read by the
    /// decoder `observe` uses, so `observe(..).table == Some(canonical(desired))` exactly
    /// when the kernel holds the desired table.
    pub fn canonical(table: &Table) -> Result<Vec<String>> {
        let batch = encode::replace(table, 0, 0)
            .with_context(|| format!("encoding table inet {}", table.name))?;
        decode::decode_all(&table.name, &batch.bytes)?.ok_or_else(|| {
            anyhow!(
                "the encoded batch for table inet {} creates no table",
                table.name
            )
        })
    }

    /// The ruleset generation id (NFT_MSG_GETGEN).
    fn generation(&mut self) -> Result<u32> {
        let seq = self.sock.next_seq();
        self.sock.advance_seq(1);
        let mut w = Writer::new();
        w.begin(nft_type(msg::GETGEN), wire::NLM_F_REQUEST, seq, 0, 0);
        let req = w.finish()?;
        let mut gen = None;
        self.sock.request(&req, seq, true, |m| {
            gen = m.attrs()?.u32(attr::GEN_ID);
            Ok(())
        })?;
        gen.ok_or_else(|| anyhow!("NEWGEN without a generation id"))
    }

    /// One dump request; `each` sees every answer. True if the kernel flagged the dump as
    /// interrupted by a concurrent change.
    fn dump(
        &mut self,
        what: u16,
        family: u8,
        attrs: &[(u16, &str)],
        mut each: impl FnMut(&wire::Msg) -> Result<()>,
    ) -> Result<bool> {
        let seq = self.sock.next_seq();
        self.sock.advance_seq(1);
        let mut w = Writer::new();
        w.begin(
            nft_type(what),
            wire::NLM_F_REQUEST | wire::NLM_F_DUMP,
            seq,
            family,
            0,
        );
        for (t, v) in attrs {
            w.put_str(*t, v);
        }
        let req = w.finish()?;
        let mut interrupted = false;
        self.sock
            .request(&req, seq, false, |m| {
                interrupted |= m.flags & wire::NLM_F_DUMP_INTR != 0;
                each(m)
            })
            .with_context(|| format!("dumping nf_tables {}", msg::name(what)))?;
        Ok(interrupted)
    }

    fn read(&mut self, name: &str) -> Result<(ObservedNft, bool)> {
        let mut dec = decode::Decoder::new(name);
        let mut foreign = Vec::new();
        let mut present = false;
        let mut owner = None;
        let mut intr = self.dump(msg::GETTABLE, 0, &[], |m| {
            if m.family() == wire::NFPROTO_INET
                && m.attrs()?.str(attr::TABLE_NAME).as_deref() == Some(name)
            {
                present = true;
                owner = m.attrs()?.u32(attr::TABLE_OWNER);
                dec.feed(m)?;
            }
            Ok(())
        })?;
        intr |= self.dump(msg::GETCHAIN, 0, &[], |m| {
            let a = m.attrs()?;
            let table = a.str(attr::CHAIN_TABLE).unwrap_or_default();
            if m.family() == wire::NFPROTO_INET && table == name {
                return dec.feed(m);
            }
            let hook = a
                .nested(attr::CHAIN_HOOK)?
                .and_then(|h| h.u32(attr::HOOK_HOOKNUM));
            if let Some(h) = hook {
                let hook = wire::hook_name(m.family(), h);
                if hook == "forward" || hook == "input" {
                    foreign.push(ForeignChain {
                        family: wire::family_name(m.family()),
                        table,
                        chain: a.str(attr::CHAIN_NAME).unwrap_or_default(),
                        hook,
                    });
                }
            }
            Ok(())
        })?;
        if present {
            let mut sets = Vec::new();
            intr |= self.dump(
                msg::GETSET,
                wire::NFPROTO_INET,
                &[(attr::SET_TABLE, name)],
                |m| {
                    if let Some(s) = m.attrs()?.str(attr::SET_NAME) {
                        sets.push(s);
                    }
                    dec.feed(m)
                },
            )?;
            for s in &sets {
                let filter = [
                    (attr::SET_ELEM_LIST_TABLE, name),
                    (attr::SET_ELEM_LIST_SET, s.as_str()),
                ];
                intr |= self
                    .dump(msg::GETSETELEM, wire::NFPROTO_INET, &filter, |m| {
                        dec.feed(m)
                    })
                    .with_context(|| format!("reading the elements of set {s}"))?;
            }
            intr |= self.dump(
                msg::GETRULE,
                wire::NFPROTO_INET,
                &[(attr::RULE_TABLE, name)],
                |m| dec.feed(m),
            )?;
        }
        foreign
            .sort_by(|a, b| (&a.family, &a.table, &a.chain).cmp(&(&b.family, &b.table, &b.chain)));
        Ok((
            ObservedNft {
                table: dec.lines(),
                foreign_chains: foreign,
                // A persisted table outlives the agent that owned it; until this session
                // takes it back, any process may change it.
                unowned: present
                    && self.flags & NFT_TABLE_F_OWNER != 0
                    && owner != Some(self.sock.portid()),
            },
            intr,
        ))
    }
}

impl Drop for NftSession {
    fn drop(&mut self) {
        monitor::unregister_session(self.netns, self.sock.portid());
    }
}

/// When the kernel refused the flagged NEWTABLE as unsupported (EOPNOTSUPP: a flag it does
/// not know; EINVAL before Linux 5.12), the flags to retry with: PERSIST goes first (Linux
/// < 6.9), then OWNER. None when that is not why the batch failed.
fn without_unsupported(
    flags: u32,
    batch: &Batch,
    errors: &[KernelError],
) -> Option<(u32, &'static str, i32)> {
    let e = errors.iter().find(|e| {
        batch.is_flagged_newtable(e.seq) && (e.errno == libc::EOPNOTSUPP || e.errno == libc::EINVAL)
    })?;
    if flags & NFT_TABLE_F_PERSIST != 0 {
        Some((flags & !NFT_TABLE_F_PERSIST, "PERSIST", e.errno))
    } else if flags & NFT_TABLE_F_OWNER != 0 {
        Some((flags & !NFT_TABLE_F_OWNER, "OWNER", e.errno))
    } else {
        None
    }
}

/// The kernel's refusal, naming the messages it refused (the first few) with their errno.
fn refused(doing: &str, batch: &Batch, errors: &[KernelError], t: &Table) -> anyhow::Error {
    const SHOWN: usize = 5;
    let mut lines = Vec::new();
    for e in errors.iter().take(SHOWN) {
        let mut l = format!(
            "{}: {}",
            batch.describe(e.seq, e.offset, t),
            e.describe_errno()
        );
        if let Some(text) = &e.text {
            l += &format!(" ({text})");
        }
        if e.errno == libc::EPERM && batch.index_of(e.seq) == Some(1) {
            l += " — the table is owned by another netlink socket (another tiernet agent?), or CAP_NET_ADMIN is missing";
        }
        lines.push(l);
    }
    if errors.len() > SHOWN {
        lines.push(format!("... and {} more errors", errors.len() - SHOWN));
    }
    anyhow!(
        "{doing}: nf_tables refused the transaction, nothing was changed:\n  {}",
        lines.join("\n  ")
    )
}

fn batch_failure(doing: &str, e: BatchError) -> anyhow::Error {
    match e {
        BatchError::Send(io) => anyhow!("{doing}: sending the batch failed: {io}"),
        BatchError::Overrun { seen } => anyhow!(
            "{doing}: nf_tables refused the transaction (more errors than the receive buffer holds; first: {})",
            seen.first().map(|e| format!("seq {}: {}", e.seq, e.describe_errno())).unwrap_or_else(|| "none read".into())
        ),
        BatchError::Refused(errs) => anyhow!("{doing}: {} errors", errs.len()),
    }
}
