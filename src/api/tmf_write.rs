//! The TMF637 writes: `POST /product`, `PATCH /product/{id}`, `DELETE /product/{id}` under
//! [`TMF_BASE`], and the retraction `DELETE /products/{id}/sources/{source}` of PINV's own
//! surface; plus [`tmf_errors`], which answers errors on the TMF surface in the OAS `Error`
//! shape.
//!
//! The writing source is the token's only source, or the `PINV-Source` header (which the
//! token must be allowed to write for); the event id is the `Idempotency-Key` header, else a
//! new UUID; the event time is now.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use crate::api::auth::{Claims, ANY_SOURCE};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::limits::BodyBudget;
use crate::api::products::{read_json, require_json};
use crate::app::service::{PostStatus, Service};
use crate::app::tmf_write::{ProductPatch, Retraction, WriteError};
use crate::config::Settings;
use crate::core::{EventId, PinvId, Source, Violation};

/// The base path of the TMF637 Product Inventory surface.
pub const TMF_BASE: &str = "/tmf-api/productInventory/v5";

/// The request header naming the writing source.
pub const SOURCE_HEADER: &str = "PINV-Source";

/// The request header carrying the event id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// `application/merge-patch+json` (RFC 7386).
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// `application/json-patch+json` (RFC 6902).
pub const JSON_PATCH: &str = "application/json-patch+json";

/// `POST /tmf-api/productInventory/v5/product`: a bare TMF637 product.
pub async fn post_product(
    claims: Claims,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
    budget: web::Data<BodyBudget>,
) -> Result<HttpResponse, ApiError> {
    crate::api::query::pairs(req.query_string())?;
    let source = writing_source(&claims, &req)?;
    let event_id = event_id(&req)?;
    require_json(&req)?;
    let (body, bytes, _reservation) = read_json(&req, payload, &settings, &budget).await?;
    if !body.is_object() {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "the body must be one TMF637 Product",
        )
        .with_details(vec![Violation::new("", "expected a JSON object")]));
    }
    let written = service
        .post_product(&source, body, &event_id, Utc::now(), bytes)
        .await
        .map_err(api_error)?;
    let mut res = match written.status {
        PostStatus::Created => HttpResponse::Created(),
        PostStatus::Unchanged => HttpResponse::Ok(),
    };
    if let Ok(location) = HeaderValue::from_str(&format!("{TMF_BASE}/product/{}", written.id)) {
        res.insert_header((header::LOCATION, location));
    }
    Ok(res.json(written.product))
}

/// `PATCH /tmf-api/productInventory/v5/product/{id}`: changes the writing source's own
/// contribution by a merge patch or a JSON patch.
pub async fn patch_product(
    claims: Claims,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
    budget: web::Data<BodyBudget>,
) -> Result<HttpResponse, ApiError> {
    crate::api::query::pairs(req.query_string())?;
    let id = product_id(&path)?;
    let source = writing_source(&claims, &req)?;
    let event_id = event_id(&req)?;
    let json_patch = patch_media_type(&req)?;
    let (body, _, _reservation) = read_json(&req, payload, &settings, &budget).await?;
    let patch = if json_patch {
        ProductPatch::Json(serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                ErrorCode::PatchInvalid,
                format!("the body is not an RFC 6902 JSON patch: {e}"),
            )
            .with_details(vec![Violation::new("", e.to_string())])
        })?)
    } else {
        ProductPatch::Merge(body)
    };
    let written = service
        .patch_product(&source, id, &patch, &event_id, Utc::now())
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(written.product))
}

/// `DELETE /tmf-api/productInventory/v5/product/{id}`: retracts the writing source's
/// contribution; an admin token deletes the whole product.
pub async fn delete_product(
    claims: Claims,
    req: HttpRequest,
    path: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    crate::api::query::pairs(req.query_string())?;
    let id = product_id(&path)?;
    if claims.pinv_admin {
        service.delete_product(id).await.map_err(api_error)?;
    } else {
        let source = writing_source(&claims, &req)?;
        retract(&service, &source, id).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /products/{id}/sources/{source}`: retracts that source's contribution.
pub async fn delete_source(
    claims: Claims,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    crate::api::query::pairs(req.query_string())?;
    let (id, source) = path.into_inner();
    let id = product_id(&id)?;
    let source = Source::parse(&source)
        .map_err(|e| ApiError::new(ErrorCode::NotFound, format!("no source '{source}': {e}")))?;
    if !claims.may_write(&source) {
        return Err(ApiError::new(
            ErrorCode::ForbiddenSource,
            format!("the token may not write for source '{source}'"),
        ));
    }
    retract(&service, &source, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn retract(service: &Service, source: &Source, id: PinvId) -> Result<(), ApiError> {
    match service.retract(source, id).await.map_err(api_error)? {
        Retraction::Remerged(_) | Retraction::Deleted => Ok(()),
    }
}

/// Answers an [`ApiError`] of a TMF route in the OAS `Error` shape (whatever raised it: the
/// handler, an extractor, the `405` of the resource).
pub async fn tmf_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let tmf = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(tmf_response);
    Ok(match tmf {
        Some(answer) => res.into_response(answer),
        None => res.map_into_boxed_body(),
    })
}

/// The response of `error` on the TMF surface: the same status and headers, the OAS body.
/// Built from the error, so that the request's log line still finds its code.
fn tmf_response(error: &ApiError) -> HttpResponse {
    let body = error.tmf_body().to_string();
    HttpResponse::from_error(error.clone()).set_body(actix_web::body::BoxBody::new(body))
}

/// The writing source: the `PINV-Source` header if given (the token must write for it),
/// else the token's only source.
fn writing_source(claims: &Claims, req: &HttpRequest) -> Result<Source, ApiError> {
    let bad = |message: String| ApiError::new(ErrorCode::BadHeader, message);
    if let Some(value) = req.headers().get(SOURCE_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| bad(format!("{SOURCE_HEADER} is not readable text")))?;
        let source = Source::parse(text)
            .map_err(|e| bad(format!("{SOURCE_HEADER} '{text}' is not a source: {e}")))?;
        if !claims.may_write(&source) {
            return Err(ApiError::new(
                ErrorCode::ForbiddenSource,
                format!("the token may not write for source '{source}'"),
            ));
        }
        return Ok(source);
    }
    match claims.sources.as_slice() {
        [only] if only != ANY_SOURCE => Source::parse(only)
            .map_err(|e| bad(format!("the token's source '{only}' is not a source: {e}"))),
        _ => Err(bad(format!(
            "{SOURCE_HEADER} is required: the token may write for {}, name the one that writes",
            if claims.sources.is_empty() {
                "no source".to_owned()
            } else {
                format!("'{}'", claims.sources.join("', '"))
            }
        ))),
    }
}

/// The event id: `Idempotency-Key`, else a new UUID.
fn event_id(req: &HttpRequest) -> Result<EventId, ApiError> {
    match req.headers().get(IDEMPOTENCY_KEY) {
        None => Ok(EventId::parse(&uuid::Uuid::new_v4().to_string()).expect("a UUID is an id")),
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::new(
                    ErrorCode::BadHeader,
                    format!("{IDEMPOTENCY_KEY} is not readable text"),
                )
            })?;
            EventId::parse(text).map_err(|e| {
                ApiError::new(
                    ErrorCode::BadHeader,
                    format!("{IDEMPOTENCY_KEY} '{text}' is not an event id: {e}"),
                )
            })
        }
    }
}

/// A PINV id from the path; anything else names no product.
fn product_id(text: &str) -> Result<PinvId, ApiError> {
    PinvId::parse(text).map_err(|_| ApiError::product_not_found(text))
}

/// `true` for a JSON patch, `false` for a merge patch; `415` for anything else.
fn patch_media_type(req: &HttpRequest) -> Result<bool, ApiError> {
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some(MERGE_PATCH) => Ok(false),
        Some(JSON_PATCH) => Ok(true),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type must be {MERGE_PATCH} or {JSON_PATCH}, not {}",
                other.map_or("missing".to_owned(), |t| format!("'{t}'"))
            ),
        )),
    }
}

/// The answer of a refused TMF write.
fn api_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Ingest(e) => e.into(),
        WriteError::NotFound(message) => ApiError::new(ErrorCode::NotFound, message),
        WriteError::PatchTestFailed(at) => {
            ApiError::new(ErrorCode::PatchTestFailed, at.message.clone()).with_details(vec![at])
        }
        WriteError::PatchInvalid(at) => {
            ApiError::new(ErrorCode::PatchInvalid, at.message.clone()).with_details(vec![at])
        }
    }
}
