//! The audit log's hash chain: each record carries the hash of the one before it, so an
//! edited, removed or reordered record breaks every hash after it.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// Certificate name of whoever caused it (or `controller`, or the gateway for flows).
    pub actor: String,
    /// apply | rollback | expiry | flow
    pub kind: String,
    pub revision: u64,
    /// JSON.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// SHA-256 over every field but the hash, each length-prefixed so no two records can
/// produce the same input.
pub fn hash_of(
    seq: u64,
    at_ms: u64,
    actor: &str,
    kind: &str,
    revision: u64,
    detail: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"tiernet-audit-v1\n");
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in [actor, kind] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(revision.to_be_bytes());
    for field in [detail, prev_hash] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

impl AuditEntry {
    pub fn new(
        seq: u64,
        at_ms: u64,
        actor: &str,
        kind: &str,
        revision: u64,
        detail: String,
        prev_hash: String,
    ) -> AuditEntry {
        let hash = hash_of(seq, at_ms, actor, kind, revision, &detail, &prev_hash);
        AuditEntry {
            seq,
            at_ms,
            actor: actor.into(),
            kind: kind.into(),
            revision,
            detail,
            prev_hash,
            hash,
        }
    }

    fn expected_hash(&self) -> String {
        hash_of(
            self.seq,
            self.at_ms,
            &self.actor,
            &self.kind,
            self.revision,
            &self.detail,
            &self.prev_hash,
        )
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {reason}")]
pub struct Broken {
    pub seq: u64,
    pub reason: String,
}

/// Checks a whole log (oldest first, from seq 1): sequence, links and hashes.
/// Returns the number of records verified.
pub fn verify(records: &[AuditEntry]) -> Result<usize, Broken> {
    let mut prev = GENESIS.to_string();
    for (i, r) in records.iter().enumerate() {
        let want_seq = i as u64 + 1;
        if r.seq != want_seq {
            return Err(Broken {
                seq: r.seq,
                reason: format!(
                    "expected sequence number {want_seq}: a record is missing or reordered"
                ),
            });
        }
        if r.prev_hash != prev {
            return Err(Broken {
                seq: r.seq,
                reason: "does not chain to the record before it".into(),
            });
        }
        if r.expected_hash() != r.hash {
            return Err(Broken {
                seq: r.seq,
                reason: "hash does not match its content: the record was altered".into(),
            });
        }
        prev = r.hash.clone();
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let e = AuditEntry::new(
                    seq,
                    1000 + seq,
                    "admin",
                    "apply",
                    seq,
                    format!("{{\"n\":{seq}}}"),
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn edits_removals_and_reorders_are_evident() {
        let mut edited = chain(5);
        edited[2].detail = "{\"n\":99}".into();
        assert_eq!(verify(&edited).map_err(|b| b.seq), Err(3));

        let mut rehashed = chain(5);
        rehashed[2].actor = "mallory".into();
        rehashed[2].hash = rehashed[2].expected_hash();
        assert_eq!(
            verify(&rehashed).map_err(|b| b.seq),
            Err(4),
            "a recomputed hash breaks the next link"
        );

        let mut removed = chain(5);
        removed.remove(1);
        assert!(verify(&removed).is_err());

        let mut truncated_head = chain(3);
        truncated_head.remove(0);
        assert!(verify(&truncated_head).is_err());
    }
}
