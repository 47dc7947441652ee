//! PLACEHOLDER until the nftables module lands: the agreed API, every call failing with a
//! clear error, so the rest of the crate builds. Replaced whole by the real module.

use crate::dataplane::monitor::KernelEvent;
use crate::nftables::ir::Table;
use crate::plan::observed::ObservedNft;
use anyhow::{anyhow, Result};

pub struct NftSession;

pub struct ReplaceStats {
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: std::time::Duration,
    pub owner: bool,
    pub persist: bool,
}

fn missing<T>() -> Result<T> {
    Err(anyhow!("the nftables dataplane is not built yet"))
}

impl NftSession {
    pub fn open(_owner: bool) -> Result<NftSession> {
        missing()
    }
    pub fn replace(&mut self, _table: &Table) -> Result<ReplaceStats> {
        missing()
    }
    pub fn delete(&mut self, _name: &str) -> Result<()> {
        missing()
    }
    pub fn observe(&mut self, _table_name: &str) -> Result<ObservedNft> {
        missing()
    }
    pub fn canonical(_table: &Table) -> Result<Vec<String>> {
        missing()
    }
}

pub fn watch_nft(_table_name: &str, _events: tokio::sync::mpsc::UnboundedSender<KernelEvent>) -> Result<()> {
    missing()
}
