//! The last applied state, persisted so an agent restores it before anything else after
//! a crash or reboot (fail-static across restarts and controller outages).

use crate::compile::GatewayState;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    /// Where the state came from (topology file, controller revision).
    pub source: String,
    /// The controller revision it belongs to, when a controller sent it.
    #[serde(default)]
    pub revision: Option<u64>,
    pub state: GatewayState,
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> Result<StateDir> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn load(&self) -> Result<Option<Persisted>> {
        let path = self.path("applied.json");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("reading persisted state {}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes atomically (temp file, fsync, rename): a crash leaves the old or the new file.
    pub fn save(&self, p: &Persisted) -> Result<()> {
        let bytes = serde_json::to_vec(p)?;
        self.write_atomic("applied.json", &bytes)
    }

    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let tmp = self.path(&format!(".{name}.tmp"));
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path(name)).with_context(|| format!("replacing {name}"))?;
        Ok(())
    }

    pub fn append_line(&self, name: &str, line: &str) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))?;
        writeln!(f, "{line}")?;
        Ok(())
    }
}
