//! Sysctls through /proc/sys of the current network namespace.

use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

fn path(key: &str) -> Result<PathBuf> {
    // Keys come from our compiler, but never let one climb out of /proc/sys.
    if key.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(anyhow!("invalid sysctl key {key}"));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

pub fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(path(key).ok()?)
        .ok()
        .map(|v| v.trim().to_string())
}

pub fn write(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key)?, value).with_context(|| format!("setting sysctl {key} = {value}"))
}
