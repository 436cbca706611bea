//! The `jobkey` binary: parse arguments, hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc instead of glibc's malloc: an exchange allocates and frees many
/// short-lived strings, and glibc's allocator (with its free-list
/// consolidation) was a quarter of the broker's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jobkey::run(jobkey::Cli::parse())
}
