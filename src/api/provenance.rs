//! `GET /products/{id}/provenance[?at=<revision>]`: where every leaf of a merged document
//! came from (`core::provenance`).
//!
//! [`provenance`] does the work from a raw id and query string, so the same answer can be
//! mounted under another base path with a thin handler.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use crate::api::auth::Claims;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::reads::load;
use crate::app::service::Service;
use crate::core::provenance::{explain_at, Element, Explanation, Leaf};

/// The explained revision of a product, with the revision and rules hash it belongs to.
pub struct Explained {
    /// The revision explained.
    pub revision: u64,
    /// The product's current revision.
    pub current: u64,
    /// Hash of the rules that made the revision.
    pub rules_hash: String,
    /// The explanation.
    pub explanation: Explanation,
}

/// Explains product `raw_id` at the revision `?at=` names (by default the current one).
pub async fn explained(
    service: &Service,
    raw_id: &str,
    query_string: &str,
) -> Result<Explained, ApiError> {
    let mut at: Option<u64> = None;
    for (name, value) in crate::api::query::pairs(query_string)? {
        match name.as_str() {
            "at" => {
                at = Some(value.parse().map_err(|_| {
                    ApiError::bad_query("at", format!("'{value}' is not a revision number"))
                })?)
            }
            _ => {
                return Err(ApiError::bad_query(
                    &name,
                    "is not a parameter of this route",
                ))
            }
        }
    }
    let record = load(service, raw_id).await?;
    let at = at.unwrap_or(record.revision);
    if at == 0 || at > record.revision {
        // A revision that never existed is not there to explain: not found, as an unknown
        // product would be (400 is for a revision that exists but cannot be reproduced).
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "product {} has no revision {at} (revisions 1 to {})",
                record.id, record.revision
            ),
        ));
    }
    let history = if at == record.revision {
        Vec::new()
    } else {
        service.store.history(&record.id).await?
    };
    let explanation = explain_at(&record, &history, &service.rules, at)
        .map_err(|e| ApiError::new(ErrorCode::RevisionNotExplainable, e.0))?;
    Ok(Explained {
        revision: at,
        current: record.revision,
        rules_hash: service.rules.hash.clone(),
        explanation,
    })
}

/// The JSON answer of the provenance route, serialised straight from the explanation
/// (through a `serde_json::Value` it cost several times the explanation itself).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'e> {
    id: &'e Value,
    revision: u64,
    current_revision: u64,
    rules_hash: &'e str,
    leaves: Vec<Leaf<'e>>,
    elements: Vec<Element<'e>>,
}

/// The JSON answer of the provenance route.
pub async fn provenance(
    service: &Service,
    raw_id: &str,
    query_string: &str,
) -> Result<HttpResponse, ApiError> {
    let e = explained(service, raw_id, query_string).await?;
    let document = e.explanation.document();
    Ok(HttpResponse::Ok().json(Answer {
        id: document.get("id").unwrap_or(&Value::Null),
        revision: e.revision,
        current_revision: e.current,
        rules_hash: &e.rules_hash,
        leaves: e.explanation.leaves(),
        elements: e.explanation.elements(),
    }))
}

/// `GET /products/{id}/provenance`.
pub async fn get_provenance(
    _claims: Claims,
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    provenance(&service, &id, req.query_string()).await
}
