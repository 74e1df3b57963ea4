//! The application layer: what PINV does with the core and a store, independent of how it is
//! asked (HTTP or the command line).
//!
//! `service` is the write path (read, plan, commit, retry), `remerge` the batch re-merge,
//! `generate` the benchmark data generator, `rules_loader` reads a merge-rules directory.

pub mod adapters;
pub mod dispatch;
pub mod generate;
pub mod remerge;
pub mod rules_loader;
pub mod service;
pub mod tmf_write;
