//! `tiernet pki init|issue`.

use super::PkiCommand;
use std::process::ExitCode;

pub fn run(cmd: PkiCommand) -> ExitCode {
    let result = match cmd {
        PkiCommand::Init { dir, hosts } => crate::pki::init(&dir, &hosts),
        PkiCommand::Issue {
            dir,
            role,
            name,
            hosts,
        } => crate::pki::issue(&dir, role, &name, &hosts).map(|(c, k)| vec![c, k]),
    };
    match result {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tiernet pki: {e:#}");
            ExitCode::from(2)
        }
    }
}
