//! The JSON Schemas of `schemas/`, compiled once.
//! STUB: signatures are fixed; bodies are being written.

use serde_json::Value;

use crate::core::Violation;

/// The schema files served under `/schema/{file}`: (file name, contents).
pub const FILES: &[(&str, &str)] = &[];

/// Compiled validators for the envelope and the TMF637 product.
pub struct Schemas {}

impl Schemas {
    /// Compiles the bundled schemas.
    pub fn compile() -> Result<Self, String> {
        todo!()
    }

    /// Violations of the envelope schema by a whole body (pointers from the body root).
    pub fn validate_envelope(&self, body: &Value) -> Vec<Violation> {
        let _ = body;
        todo!()
    }

    /// Violations of the product schema by one product; `prefix` is the product's pointer
    /// in the body (e.g. `/value` or `/value/2`) and starts every reported pointer.
    pub fn validate_product(&self, product: &Value, prefix: &str) -> Vec<Violation> {
        let _ = (product, prefix);
        todo!()
    }
}

/// The contents of a schema file by name.
pub fn file(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}
