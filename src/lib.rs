//! PINV, the product-inventory merge store.
//!
//! `core` is the pure merge engine; `store` persists products; `api` is the HTTP shell.

pub mod api;
pub mod cli;
pub mod config;
pub mod core;
pub mod generate;
pub mod remerge;
pub mod rules_loader;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
