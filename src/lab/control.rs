//! `lab apply` and `lab ctl`: the lab's controller driven through the real `tiernet` CLI,
//! run inside the management namespace with the lab's admin certificate.

use super::state::LabDir;
use super::updown::compile_text;
use super::{mgmt, plan, rewrite};
use crate::topology::load::read_text;
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::Path;

fn controlled(name: &str) -> Result<LabDir> {
    let dir = LabDir::new(name)?;
    let meta = dir.meta()?;
    if !meta.controller {
        bail!("lab {name} runs its agents standalone (no controller); `tiernet lab up` it without --standalone");
    }
    if !mgmt::controller_running(&dir) {
        eprintln!(
            "note: the lab's controller is not running (`tiernet lab controller start --name {name}`)"
        );
    }
    Ok(dir)
}

/// Rolls `file` out through the lab's controller, rewritten as `lab up` rewrites (VLANs
/// to ports). The lab's wiring is fixed at `lab up`: a topology that needs hosts the lab
/// does not have is refused before anything is sent. Returns the CLI's exit code.
pub fn apply(name: &str, file: &Path, canary: Option<&str>, plan_only: bool) -> Result<i32> {
    let dir = controlled(name)?;
    let today = dir.meta()?.today()?;
    let text = read_text(file)?;
    let (topology, _) = compile_text(file, &text, today)?;
    let (text, _) = rewrite::untag(&text, &topology)?;
    let submitted = dir.submitted(file)?;
    std::fs::write(&submitted, &text)?;
    let (topology, compiled) = compile_text(&submitted, &text, today)?;
    let wanted = plan::plan(name, &topology, &compiled)?.namespaces();
    let have = dir.recorded_namespaces();
    if let Some(ns) = wanted.iter().find(|ns| !have.contains(ns)) {
        bail!(
            "{} needs namespace {ns}, which lab {name} was not built with: new gateways, segments or services need `tiernet lab up` with the new file",
            file.display()
        );
    }
    let mut args: Vec<OsString> = vec![
        if plan_only { "plan" } else { "apply" }.into(),
        submitted.into_os_string(),
    ];
    if let Some(gw) = canary {
        args.extend(["--canary".into(), gw.into()]);
    }
    mgmt::run_cli(&dir, &args)
}

/// Any `tiernet` control command against the lab's controller.
pub fn ctl(name: &str, args: &[OsString]) -> Result<i32> {
    let dir = controlled(name)?;
    mgmt::run_cli(&dir, args)
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ControllerAction {
    Start,
    Stop,
    /// SIGKILL, as a crash.
    Kill,
}

/// `lab controller start|stop|kill`: for showing fail-static gateways and reconnection.
pub fn controller(name: &str, action: ControllerAction) -> Result<()> {
    let dir = controlled(name)?;
    match action {
        ControllerAction::Start if mgmt::controller_running(&dir) => {
            say!("the controller of lab {name} runs already")
        }
        ControllerAction::Start => {
            mgmt::start_controller(&dir, dir.meta()?.today()?)?;
            say!("controller of lab {name} started; agents reconnect with backoff");
        }
        ControllerAction::Stop => {
            mgmt::stop_controller(&dir)?;
            say!("controller of lab {name} stopped; gateways keep enforcing their last state");
        }
        ControllerAction::Kill => {
            mgmt::kill_controller(&dir)?;
            say!("controller of lab {name} killed (SIGKILL); gateways keep enforcing their last state");
        }
    }
    Ok(())
}
