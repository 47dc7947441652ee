//! `tiernet-controller`: the control plane. Not built yet (issue: gRPC controller with
//! mutual TLS); until then agents run standalone with `--topology`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tiernet-controller",
    version,
    about = "tiernet control plane (not available yet: run tiernet-agent --topology FILE on each gateway)"
)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("tiernet-controller: the gRPC control plane is not part of this build yet; run `tiernet-agent --gateway NAME --topology FILE` on each gateway");
    std::process::ExitCode::from(2)
}
