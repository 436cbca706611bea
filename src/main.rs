//! The `jobkey` binary: parse arguments, hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    jobkey::run(jobkey::Cli::parse())
}
