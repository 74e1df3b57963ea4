//! `GET /schema/{file}`: the bundled JSON Schema files.

use actix_web::{web, HttpResponse};

use crate::api::error::{ApiError, ErrorCode};
use crate::core::schema;

/// The schema file by name, or `404`.
pub async fn get_schema(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = file.into_inner();
    match schema::file(&name) {
        Some(contents) => Ok(HttpResponse::Ok()
            .content_type("application/schema+json")
            .body(contents)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no schema file '{name}'"),
        )),
    }
}
