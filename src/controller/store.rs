//! The controller's embedded SQLite store: topology revisions, apply results, events and
//! the hash-chained audit log, in one file.

use super::audit::{self, AuditEntry};
use crate::compile::GatewayState;
use anyhow::{anyhow, Context, Result};
use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS revisions (
    id          INTEGER PRIMARY KEY,
    created_ms  INTEGER NOT NULL,
    author      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    parent      INTEGER NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    topology    TEXT NOT NULL,
    compiled    TEXT NOT NULL,
    compiled_on TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS apply_results (
    revision   INTEGER NOT NULL,
    gateway    TEXT NOT NULL,
    phase      TEXT NOT NULL,
    ok         INTEGER NOT NULL,
    error      TEXT NOT NULL,
    changes    INTEGER NOT NULL,
    elapsed_ms REAL NOT NULL,
    at_ms      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    gateway TEXT NOT NULL,
    kind    TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- What each gateway's agent enforced before its first controller revision, as it sent it
-- (JSON of a GatewayState): what "revision 0" puts back.
CREATE TABLE IF NOT EXISTS baselines (
    gateway TEXT PRIMARY KEY,
    state   TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
-- Gateways that took a revision which did not roll out completely and that are in no
-- applied revision: put back on their baseline (revision 0) when they next report a
-- controller revision. Cleared by that revert or by an applied revision naming them.
CREATE TABLE IF NOT EXISTS pending_reverts (
    gateway  TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    reason   TEXT NOT NULL
);
-- Append-only through this interface; the hash chain makes edits that bypass it evident.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionStatus {
    RollingOut,
    Applied,
    Failed,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::RollingOut => "rolling-out",
            RevisionStatus::Applied => "applied",
            RevisionStatus::Failed => "failed",
        }
    }
}

/// A revision as stored.
#[derive(Debug, Clone)]
pub struct Revision {
    pub id: u64,
    pub created_ms: u64,
    pub author: String,
    /// apply | rollback | expiry
    pub kind: String,
    pub status: String,
    pub source: String,
    /// The revision that was current when this one was made (0: none).
    pub parent: u64,
    pub message: String,
    pub topology: String,
    pub gateways: Vec<GatewayState>,
    pub compiled_on: NaiveDate,
}

impl Revision {
    pub fn gateway(&self, name: &str) -> Option<&GatewayState> {
        self.gateways.iter().find(|g| g.gateway == name)
    }

    pub fn gateway_names(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.gateway.clone()).collect()
    }
}

/// What a new revision holds before it gets an id.
pub struct NewRevision<'a> {
    pub author: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub parent: u64,
    pub topology: &'a str,
    pub gateways: &'a [GatewayState],
    pub compiled_on: NaiveDate,
}

#[derive(Debug, Clone)]
pub struct ApplyRow {
    pub revision: u64,
    pub gateway: String,
    /// apply | revert | reconnect
    pub phase: String,
    pub ok: bool,
    pub error: String,
    pub changes: u32,
    pub elapsed_ms: f64,
    pub at_ms: u64,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: u64,
    pub at_ms: u64,
    pub gateway: String,
    pub kind: String,
    pub summary: String,
    pub detail: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

pub fn now_ms() -> u64 {
    u64::try_from(crate::agent::drift::now_ms()).unwrap_or(u64::MAX)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn =
            Connection::open(path).with_context(|| format!("opening store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .context("creating the store schema")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing store read-only (for `tiernet audit verify --store`).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening store {}", path.display()))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_revision(&self, r: &NewRevision) -> Result<u64> {
        let compiled = serde_json::to_string(r.gateways)?;
        let c = self.conn();
        c.execute(
            "INSERT INTO revisions (created_ms, author, kind, status, source, parent, topology, compiled, compiled_on)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                to_i64(now_ms()),
                r.author,
                r.kind,
                RevisionStatus::RollingOut.as_str(),
                r.source,
                to_i64(r.parent),
                r.topology,
                compiled,
                r.compiled_on.to_string()
            ],
        )?;
        Ok(to_u64(c.last_insert_rowid()))
    }

    pub fn set_status(&self, id: u64, status: RevisionStatus, message: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE revisions SET status = ?1, message = ?2 WHERE id = ?3",
            params![status.as_str(), message, to_i64(id)],
        )?;
        Ok(())
    }

    fn row_to_revision(row: &rusqlite::Row) -> rusqlite::Result<(Revision, String, String)> {
        Ok((
            Revision {
                id: to_u64(row.get(0)?),
                created_ms: to_u64(row.get(1)?),
                author: row.get(2)?,
                kind: row.get(3)?,
                status: row.get(4)?,
                source: row.get(5)?,
                parent: to_u64(row.get(6)?),
                message: row.get(7)?,
                topology: row.get(8)?,
                gateways: Vec::new(),
                compiled_on: NaiveDate::MIN,
            },
            row.get(9)?,
            row.get(10)?,
        ))
    }

    fn finish(raw: (Revision, String, String)) -> Result<Revision> {
        let (mut r, compiled, on) = raw;
        r.gateways = serde_json::from_str(&compiled)
            .with_context(|| format!("revision {} has unreadable compiled state", r.id))?;
        r.compiled_on = on
            .parse()
            .map_err(|e| anyhow!("revision {}: bad compiled_on {on}: {e}", r.id))?;
        Ok(r)
    }

    const COLUMNS: &'static str = "id, created_ms, author, kind, status, source, parent, message, topology, compiled, compiled_on";

    pub fn revision(&self, id: u64) -> Result<Option<Revision>> {
        let raw = self
            .conn()
            .query_row(
                &format!("SELECT {} FROM revisions WHERE id = ?1", Self::COLUMNS),
                [to_i64(id)],
                Self::row_to_revision,
            )
            .optional()?;
        raw.map(Self::finish).transpose()
    }

    /// The revision the gateways are on: the latest one that rolled out completely.
    pub fn current(&self) -> Result<Option<Revision>> {
        let raw = self
            .conn()
            .query_row(
                &format!(
                    "SELECT {} FROM revisions WHERE status = 'applied' ORDER BY id DESC LIMIT 1",
                    Self::COLUMNS
                ),
                [],
                Self::row_to_revision,
            )
            .optional()?;
        raw.map(Self::finish).transpose()
    }

    /// Newest first.
    pub fn history(&self, limit: u32) -> Result<Vec<Revision>> {
        let c = self.conn();
        let mut stmt = c.prepare(&format!(
            "SELECT {} FROM revisions ORDER BY id DESC LIMIT ?1",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map([i64::from(limit)], Self::row_to_revision)?;
        rows.map(|r| Self::finish(r?)).collect()
    }

    /// Revisions left `rolling-out` by a controller that died mid-rollout, oldest first.
    pub fn unfinished(&self) -> Result<Vec<Revision>> {
        let c = self.conn();
        let mut stmt = c.prepare(&format!(
            "SELECT {} FROM revisions WHERE status = 'rolling-out' ORDER BY id ASC",
            Self::COLUMNS
        ))?;
        let rows = stmt.query_map([], Self::row_to_revision)?;
        rows.map(|r| Self::finish(r?)).collect()
    }

    /// Marks an unfinished revision failed and queues the reverts of the gateways it named
    /// that no applied revision covers, in one transaction (a second crash half-way through
    /// recovery finds the same work to do).
    pub fn fail_interrupted(&self, id: u64, message: &str, reverts: &[String]) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE revisions SET status = 'failed', message = ?1 WHERE id = ?2 AND status = 'rolling-out'",
            params![message, to_i64(id)],
        )?;
        for g in reverts {
            tx.execute(
                "INSERT OR REPLACE INTO pending_reverts (gateway, revision, reason) VALUES (?1, ?2, ?3)",
                params![g, to_i64(id), message],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn add_pending_revert(&self, gateway: &str, revision: u64, reason: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO pending_reverts (gateway, revision, reason) VALUES (?1, ?2, ?3)",
            params![gateway, to_i64(revision), reason],
        )?;
        Ok(())
    }

    /// The revision a gateway must be put back from, if it has a pending revert.
    pub fn pending_revert(&self, gateway: &str) -> Result<Option<u64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT revision FROM pending_reverts WHERE gateway = ?1",
                [gateway],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(to_u64))
    }

    pub fn clear_pending_reverts(&self, gateways: &[String]) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for g in gateways {
            tx.execute("DELETE FROM pending_reverts WHERE gateway = ?1", [g])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_baseline(&self, gateway: &str, state_json: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO baselines (gateway, state, at_ms) VALUES (?1, ?2, ?3)",
            params![gateway, state_json, to_i64(now_ms())],
        )?;
        Ok(())
    }

    /// The pre-controller state a gateway's agent sent, if any.
    pub fn baseline(&self, gateway: &str) -> Result<Option<GatewayState>> {
        let raw: Option<String> = self
            .conn()
            .query_row(
                "SELECT state FROM baselines WHERE gateway = ?1",
                [gateway],
                |r| r.get(0),
            )
            .optional()?;
        raw.map(|j| {
            serde_json::from_str(&j).with_context(|| format!("baseline of {gateway} unreadable"))
        })
        .transpose()
    }

    /// Apply results of one revision, in the order recorded.
    pub fn results(&self, revision: u64) -> Result<Vec<ApplyRow>> {
        let c = self.conn();
        let mut stmt = c.prepare(
            "SELECT revision, gateway, phase, ok, error, changes, elapsed_ms, at_ms FROM apply_results WHERE revision = ?1 ORDER BY rowid ASC",
        )?;
        let rows = stmt.query_map([to_i64(revision)], |r| {
            Ok(ApplyRow {
                revision: to_u64(r.get(0)?),
                gateway: r.get(1)?,
                phase: r.get(2)?,
                ok: r.get(3)?,
                error: r.get(4)?,
                changes: r.get(5)?,
                elapsed_ms: r.get(6)?,
                at_ms: to_u64(r.get(7)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many revisions are stored (for tests and diagnostics).
    pub fn revision_count(&self) -> Result<u64> {
        Ok(to_u64(self.conn().query_row(
            "SELECT COUNT(*) FROM revisions",
            [],
            |r| r.get(0),
        )?))
    }

    pub fn record_results(&self, rows: &[ApplyRow]) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for r in rows {
            tx.execute(
                "INSERT INTO apply_results (revision, gateway, phase, ok, error, changes, elapsed_ms, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![to_i64(r.revision), r.gateway, r.phase, r.ok, r.error, r.changes, r.elapsed_ms, to_i64(r.at_ms)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn add_event(
        &self,
        gateway: &str,
        kind: &str,
        summary: &str,
        detail: &str,
    ) -> Result<EventRow> {
        let at_ms = now_ms();
        let c = self.conn();
        c.execute(
            "INSERT INTO events (at_ms, gateway, kind, summary, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![to_i64(at_ms), gateway, kind, summary, detail],
        )?;
        let id = to_u64(c.last_insert_rowid());
        Ok(EventRow {
            id,
            at_ms,
            gateway: gateway.into(),
            kind: kind.into(),
            summary: summary.into(),
            detail: detail.into(),
        })
    }

    /// Events after `after` (oldest first); with `after == 0`, the last `limit`.
    pub fn events(&self, after: u64, limit: u32) -> Result<Vec<EventRow>> {
        let c = self.conn();
        let map = |row: &rusqlite::Row| {
            Ok(EventRow {
                id: to_u64(row.get(0)?),
                at_ms: to_u64(row.get(1)?),
                gateway: row.get(2)?,
                kind: row.get(3)?,
                summary: row.get(4)?,
                detail: row.get(5)?,
            })
        };
        let mut rows: Vec<EventRow> = if after == 0 {
            let mut stmt = c.prepare("SELECT id, at_ms, gateway, kind, summary, detail FROM events ORDER BY id DESC LIMIT ?1")?;
            let r = stmt
                .query_map([i64::from(limit)], map)?
                .collect::<rusqlite::Result<_>>()?;
            r
        } else {
            let mut stmt = c.prepare("SELECT id, at_ms, gateway, kind, summary, detail FROM events WHERE id > ?1 ORDER BY id ASC LIMIT ?2")?;
            let r = stmt
                .query_map(params![to_i64(after), i64::from(limit)], map)?
                .collect::<rusqlite::Result<_>>()?;
            r
        };
        rows.sort_by_key(|e| e.id);
        Ok(rows)
    }

    /// Appends to the audit log, chaining the new record to the last one, in one transaction.
    pub fn audit_append(
        &self,
        actor: &str,
        kind: &str,
        revision: u64,
        detail: &serde_json::Value,
    ) -> Result<AuditEntry> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (seq, prev_hash) = match last {
            Some((s, h)) => (to_u64(s) + 1, h),
            None => (1, audit::GENESIS.to_string()),
        };
        let entry = AuditEntry::new(
            seq,
            now_ms(),
            actor,
            kind,
            revision,
            detail.to_string(),
            prev_hash,
        );
        tx.execute(
            "INSERT INTO audit (seq, at_ms, actor, kind, revision, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                to_i64(entry.seq),
                to_i64(entry.at_ms),
                entry.actor,
                entry.kind,
                to_i64(entry.revision),
                entry.detail,
                entry.prev_hash,
                entry.hash
            ],
        )?;
        tx.commit()?;
        Ok(entry)
    }

    pub fn audit_records(&self, after: u64) -> Result<Vec<AuditEntry>> {
        let c = self.conn();
        let mut stmt =
            c.prepare("SELECT seq, at_ms, actor, kind, revision, detail, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq ASC")?;
        let rows = stmt.query_map([to_i64(after)], |r| {
            Ok(AuditEntry {
                seq: to_u64(r.get(0)?),
                at_ms: to_u64(r.get(1)?),
                actor: r.get(2)?,
                kind: r.get(3)?,
                revision: to_u64(r.get(4)?),
                detail: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
