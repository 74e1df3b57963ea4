//! `POST /adapters/{system}`: a native payload of a system that does not speak TMF637,
//! mapped by that system's adapter (`adapters/{system}.toml`) and stored through the write
//! path, one product at a time.
//!
//! Order of checks: token (401), system (404), content type (415), size (413), the body
//! budget (503), arrival (408), JSON (400), the adapter's source against the token (403),
//! the mapping of every product (400, pointers into the payload; nothing written), then
//! each product's write, reported per product.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::auth::Claims;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::limits::BodyBudget;
use crate::api::products::{read_json, require_json};
use crate::app::adapters::{AdaptError, Adapted};
use crate::app::service::{PostStatus, Service};
use crate::app::tmf_write::WriteError;
use crate::config::Settings;
use crate::core::adapter::Adapters;

/// `POST /adapters/{system}`.
#[allow(clippy::too_many_arguments)]
pub async fn post_adapter(
    claims: Claims,
    req: HttpRequest,
    system: web::Path<String>,
    payload: web::Payload,
    service: web::Data<Service>,
    adapters: web::Data<Adapters>,
    settings: web::Data<Settings>,
    budget: web::Data<BodyBudget>,
) -> Result<HttpResponse, ApiError> {
    let system = system.into_inner();
    if adapters.get(&system).is_none() {
        return Err(adapt_error(AdaptError::UnknownSystem(system)));
    }
    require_json(&req)?;
    let (body, _, _reservation) = read_json(&req, payload, &settings, &budget).await?;
    // Header names are case-insensitive: the adapter names them in lowercase.
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let results = service
        .adapt(&adapters, &system, body, &headers, &|s| claims.may_write(s))
        .await
        .map_err(adapt_error)?;
    answer(&system, results)
}

/// The answer: per product, its pointer in the payload, event id and outcome. `201` when
/// anything was stored, `200` when every product was stored before; when every product
/// failed, the first failure's error, with every product's details.
fn answer(system: &str, results: Vec<Adapted>) -> Result<HttpResponse, ApiError> {
    let mut overall: Option<StatusCode> = None;
    let mut first_error: Option<ApiError> = None;
    let mut all_details = Vec::new();
    let mut entries = Vec::with_capacity(results.len());
    for r in results {
        let mut entry = json!({"pointer": r.mapped.at, "eventId": r.mapped.event_id});
        match r.result {
            Ok((status, product)) => {
                let code = match status {
                    PostStatus::Created => StatusCode::CREATED,
                    PostStatus::Unchanged => StatusCode::OK,
                };
                overall = Some(overall.map_or(code, |o| {
                    if o == StatusCode::CREATED || code == StatusCode::CREATED {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    }
                }));
                entry["status"] = json!(code.as_u16());
                // The merge gives every document its PINV id and `href`.
                entry["id"] = json!(product.to_string());
                entry["href"] = json!(product.href());
            }
            Err(e) => {
                let e = write_error(e, &r.mapped.at);
                entry["status"] = json!(e.code.status().as_u16());
                entry["error"] = e.body()["error"].clone();
                all_details.extend(e.details.iter().cloned());
                first_error.get_or_insert(e);
            }
        }
        entries.push(entry);
    }
    match (overall, first_error) {
        (Some(status), _) => Ok(HttpResponse::build(status).json(json!({
            "status": status.as_u16(),
            "timestamp": crate::api::timestamp(),
            "system": system,
            "results": entries,
        }))),
        (None, Some(e)) => Err(e.with_details(all_details)),
        (None, None) => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "the payload holds no product",
        )),
    }
}

fn adapt_error(e: AdaptError) -> ApiError {
    match e {
        AdaptError::UnknownSystem(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        AdaptError::Forbidden(_) => ApiError::new(ErrorCode::ForbiddenSource, e.to_string()),
        AdaptError::Invalid(_, ref v) => {
            let message = match v.total() {
                1 => format!("{e}: {}", v[0].message),
                n => format!("{e}: {n} problems, see details"),
            };
            let AdaptError::Invalid(_, v) = e else {
                unreachable!("matched above")
            };
            ApiError::new(ErrorCode::ValidationFailed, message).with_details(v.into_vec())
        }
    }
}

/// One product's refusal as an API error; located at the product when the error has no
/// place of its own.
fn write_error(e: WriteError, at: &str) -> ApiError {
    let mut api = match e {
        WriteError::Ingest(e) => ApiError::from(e),
        WriteError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
        WriteError::PatchTestFailed(v) | WriteError::PatchInvalid(v) => {
            ApiError::new(ErrorCode::ValidationFailed, v.message.clone()).with_details(vec![v])
        }
    };
    if api.details.is_empty() {
        api.details = vec![crate::core::Violation::new(at, api.message.clone())];
    } else {
        // Errors of the write path that point into the envelope (event id reuse, identity
        // conflicts) belong to the product's element of the payload.
        for d in &mut api.details {
            if d.pointer.starts_with("/headers") || d.pointer == "/value" {
                d.pointer = at.to_owned();
            }
        }
    }
    api
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_system_is_not_found() {
        let e = adapt_error(AdaptError::UnknownSystem("x".into()));
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.message, "no adapter for system 'x'");
    }
}
