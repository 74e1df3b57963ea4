//! PINV, the product-inventory merge store.
//!
//! `core` is the pure merge engine; `store` persists products; `app` is the application layer
//! (write path, re-merge, generator) over both; `api` is the HTTP shell; `cli` the commands.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
