//! Helpers shared by the crate's integration tests (`tests/*.rs` and the API suite in
//! `tests/api/`) and its benches, behind the `testing` feature like
//! [`crate::store::conformance`]: one home that every test crate reaches as `pinv::testing`,
//! where a `tests/support` module would need a `#[path]` include from the API suite's
//! subdirectory.

pub mod mongo;
pub mod rules;
pub mod seed;
