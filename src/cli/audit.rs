//! `tiernet audit verify`: recompute the audit log's hash chain, from the store file or
//! from what the controller serves.

use super::remote::{client, rpc_failed};
use super::{Conn, Format};
use crate::controller::audit::{verify as verify_chain, AuditEntry};
use crate::controller::store::Store;
use crate::proto::v1::AuditRequest;
use std::path::PathBuf;
use std::process::ExitCode;

async fn records(store: Option<PathBuf>, conn: &Conn) -> Result<Vec<AuditEntry>, ExitCode> {
    if let Some(path) = store {
        let s = Store::open_read_only(&path).map_err(|e| {
            eprintln!("tiernet audit: {e:#}");
            ExitCode::from(2)
        })?;
        return s.audit_records(0).map_err(|e| {
            eprintln!("tiernet audit: {e:#}");
            ExitCode::from(2)
        });
    }
    let mut c = client(conn).await?;
    let reply = c
        .audit(AuditRequest { after: 0 })
        .await
        .map_err(rpc_failed)?
        .into_inner();
    Ok(reply
        .records
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            kind: r.kind,
            revision: r.revision,
            detail: r.detail_json,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
        .collect())
}

pub async fn verify(store: Option<PathBuf>, conn: &Conn) -> ExitCode {
    let recs = match records(store, conn).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = verify_chain(&recs);
    if conn.output == Format::Json {
        let v = match &result {
            Ok(n) => {
                serde_json::json!({"intact": true, "records": n, "head": recs.last().map(|r| r.hash.clone())})
            }
            Err(b) => serde_json::json!({"intact": false, "seq": b.seq, "reason": b.reason}),
        };
        println!("{v}");
    }
    match result {
        Ok(n) => {
            if conn.output == Format::Text {
                let head = recs.last().map_or("-".to_string(), |r| r.hash.clone());
                println!("audit log intact: {n} records, head {head}");
            }
            ExitCode::SUCCESS
        }
        Err(b) => {
            eprintln!("audit log BROKEN: {b}");
            ExitCode::from(1)
        }
    }
}
