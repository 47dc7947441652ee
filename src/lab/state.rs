//! Where a lab keeps its state: /run/tiernet-lab/<lab>/ holds the topology the lab
//! really runs (rewritten for the kernel), the namespaces it created, and per agent a
//! state directory, a pid file and a log.

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LAB_ROOT: &str = "/run/tiernet-lab";

/// What `lab up` decided, for the commands that follow it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The topology file given to `lab up`.
    pub source: String,
    /// The day flows are judged by (`--today`), as YYYY-MM-DD.
    pub today: String,
    /// Whether VLANs were replaced by untagged ports.
    pub untagged: bool,
    pub agents: bool,
    /// Whether the agents take their state from the lab's controller (over mutual TLS)
    /// rather than each compiling the topology file itself.
    #[serde(default)]
    pub controller: bool,
}

impl Meta {
    pub fn today(&self) -> Result<NaiveDate> {
        self.today
            .parse()
            .with_context(|| format!("bad day '{}' in the lab's state", self.today))
    }
}

pub struct LabDir {
    pub name: String,
    pub root: PathBuf,
}

/// Lab names become namespace and directory names: keep them plain.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        bail!("invalid lab name '{name}': use up to 32 letters, digits, '-' or '_'");
    }
    Ok(())
}

impl LabDir {
    pub fn new(name: &str) -> Result<LabDir> {
        check_name(name)?;
        Ok(LabDir {
            name: name.to_string(),
            root: Path::new(LAB_ROOT).join(name),
        })
    }

    pub fn exists(&self) -> bool {
        self.root.exists()
    }

    pub fn create(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.root.join("agents"),
            self.root.join("logs"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    pub fn topology(&self) -> PathBuf {
        self.root.join("topology.yaml")
    }
    fn meta_path(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    fn namespaces_path(&self) -> PathBuf {
        self.root.join("namespaces")
    }
    pub fn agent_state(&self, gateway: &str) -> PathBuf {
        self.root.join("agents").join(gateway)
    }
    pub fn agent_pid(&self, gateway: &str) -> PathBuf {
        self.root.join("agents").join(format!("{gateway}.pid"))
    }
    pub fn agent_log(&self, gateway: &str) -> PathBuf {
        self.root.join("logs").join(format!("{gateway}.log"))
    }
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn controller_store(&self) -> PathBuf {
        self.root.join("controller.db")
    }
    pub fn controller_pid(&self) -> PathBuf {
        self.root.join("controller.pid")
    }
    pub fn controller_addr(&self) -> PathBuf {
        self.root.join("controller.addr")
    }
    pub fn controller_log(&self) -> PathBuf {
        self.root.join("logs").join("controller.log")
    }
    /// Where `lab apply` keeps `file` rewritten for the lab, under its own file name (the
    /// controller records it as the revision's source).
    pub fn submitted(&self, file: &Path) -> Result<PathBuf> {
        let dir = self.root.join("submitted");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = file
            .file_name()
            .with_context(|| format!("{} names no file", file.display()))?;
        Ok(dir.join(name))
    }

    pub fn write_meta(&self, meta: &Meta) -> Result<()> {
        let text = serde_json::to_string_pretty(meta).context("encoding the lab's state")?;
        std::fs::write(self.meta_path(), text)
            .with_context(|| format!("writing {}", self.meta_path().display()))
    }

    pub fn meta(&self) -> Result<Meta> {
        let path = self.meta_path();
        if !path.exists() {
            bail!(
                "lab '{}' is not up; start it with `tiernet lab up FILE --name {}`",
                self.name,
                self.name
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Notes a namespace before it is created, so `down` finds it even after a failed `up`.
    pub fn record_namespace(&self, ns: &str) -> Result<()> {
        let path = self.namespaces_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{ns}").with_context(|| format!("writing {}", path.display()))
    }

    pub fn recorded_namespaces(&self) -> Vec<String> {
        std::fs::read_to_string(self.namespaces_path())
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Gateways with a pid file, from the file names under agents/.
    pub fn agent_gateways(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join("agents")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = dir
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".pid")
                    .map(String::from)
            })
            .collect();
        out.sort();
        out
    }
}
