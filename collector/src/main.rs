//! `collector`: the agent, the central collector and the operator CLI in one binary.
use clap::Parser;

/// jemalloc: the agent allocates and frees small buffers per message on one thread, where
/// glibc's allocator spent about a fifth of the agent's time (`cargo xtask bench`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = collector::cli::Cli::parse();
    collector::cli::run(cli)
}
