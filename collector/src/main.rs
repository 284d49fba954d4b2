//! `collector`: the agent, the central collector and the operator CLI in one binary.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = collector::cli::Cli::parse();
    collector::cli::run(cli)
}
