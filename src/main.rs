//! The `pinv` binary: see [`pinv::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pinv::cli::run(pinv::cli::Cli::parse())
}
