//! The `pinv` binary: see [`pinv::cli`].

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pinv::cli::run(pinv::cli::Cli::from_env_and_args())
}
