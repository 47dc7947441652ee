//! Reading a topology file from disk and turning it into diagnostics or a compiled state.

use super::{parse, Topology};
use crate::compile::{compile, compile_validated, Compiled};
use crate::diag::{self, Diagnostic};
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// A topology file that could not be read at all (exit code 2 territory).
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read topology: {reason}")]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

/// A topology read from disk, with what parsing and validation found.
pub struct Loaded {
    pub path: String,
    pub topology: Option<Topology>,
    pub diagnostics: Vec<Diagnostic>,
    /// The day the rules were checked for (expiry depends on it).
    pub checked_on: NaiveDate,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        diag::has_errors(&self.diagnostics)
    }

    /// Every diagnostic as `FILE:LINE:COL: level[rule]: message`, one per line.
    pub fn report(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(&self.path) + "\n")
            .collect()
    }

    /// Compiles a topology that validated (for the `today` it was checked with); the report
    /// otherwise.
    pub fn compile(&self, today: NaiveDate) -> Result<Compiled, String> {
        match &self.topology {
            // `check` validated it for this day: no second validation.
            Some(t) if !self.has_errors() && today == self.checked_on => {
                Ok(compile_validated(t, today, self.diagnostics.clone()))
            }
            Some(t) if !self.has_errors() => compile(t, today)
                .map_err(|d| d.iter().map(|x| x.render(&self.path) + "\n").collect()),
            _ => Err(self.report()),
        }
    }
}

pub fn read_text(path: &Path) -> Result<String, Unreadable> {
    let unreadable = |reason: String| Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if meta.len() > super::reader::MAX_FILE_BYTES as u64 {
        return Err(unreadable(format!(
            "larger than {} bytes",
            super::reader::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))
}

/// Parses and validates text that came from `path` (the name used in diagnostics).
pub fn check(path: &str, text: &str, today: NaiveDate) -> Loaded {
    let (topology, mut diagnostics) = parse(text);
    if let Some(t) = &topology {
        // Structural errors make rule checks unreliable only where the node is missing;
        // the rules run on what parsed so every problem shows up in one run.
        diagnostics.extend(crate::validate::validate(t, today));
    }
    diag::sort(&mut diagnostics);
    diagnostics.dedup();
    Loaded {
        path: path.to_string(),
        topology,
        diagnostics,
        checked_on: today,
    }
}

pub fn load(path: &Path, today: NaiveDate) -> Result<Loaded, Unreadable> {
    let text = read_text(path)?;
    Ok(check(&path.display().to_string(), &text, today))
}
