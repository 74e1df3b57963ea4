//! The `GET /products...` routes: reads go to the store directly, through the service's
//! handle, since they need none of the write path's logic.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::api::auth::Claims;
use crate::api::error::ApiError;
use crate::api::products::as_adi_package;
use crate::app::service::Service;
use crate::core::record::ProductRecord;
use crate::core::PinvId;
use crate::store::ListQuery;

pub use crate::core::query::{DEFAULT_LIMIT, MAX_LIMIT};

/// Parses a list route's query string (a `400 BAD_QUERY` naming the parameter PINV cannot
/// read).
pub fn parse_list_query(query_string: &str) -> Result<ListQuery, ApiError> {
    ListQuery::parse(query_string, &[]).map_err(|e| ApiError::bad_query(&e.parameter, e.message))
}

/// The page a list route answers, projected, and how many products match in all.
pub async fn list_page(
    service: &Service,
    query_string: &str,
) -> Result<(Vec<Value>, u64), ApiError> {
    let query = parse_list_query(query_string)?;
    let page = service.store.list(&query).await?;
    let items = page.items.into_iter().map(|d| query.project(d)).collect();
    Ok((items, page.total))
}

/// A list answer: the items, with `X-Total-Count` and `X-Result-Count`.
pub fn list_response(items: &[Value], total: u64) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("X-Total-Count", total.to_string()))
        .insert_header(("X-Result-Count", items.len().to_string()))
        .json(items)
}

pub(crate) fn parse_id(raw: &str) -> Result<PinvId, ApiError> {
    PinvId::parse(raw).map_err(|_| ApiError::product_not_found(raw))
}

pub(crate) async fn load(service: &Service, raw_id: &str) -> Result<ProductRecord, ApiError> {
    let id = parse_id(raw_id)?;
    service
        .store
        .get_products(&[id])
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::product_not_found(raw_id))
}

/// `GET /products/{id}[?as-adi-package=true]`.
pub async fn get_product(
    _claims: Claims,
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let package = as_adi_package(req.query_string())?;
    if !package {
        // The document as stored is the answer: no tree is built.
        let merged = service
            .store
            .get_merged_json(&parse_id(&id)?)
            .await?
            .ok_or_else(|| ApiError::product_not_found(&id))?;
        return Ok(HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(String::from(Box::<str>::from(merged))));
    }
    let record = load(&service, &id).await?;
    let others = match record.package_root {
        Some(root) => service.package_members([root], &[record.id]).await?,
        None => Vec::new(),
    };
    let data = std::iter::once(&record.merged)
        .chain(others.iter().map(|r| &r.merged))
        .map(|value| crate::api::ResponsePart {
            headers: None,
            value,
        })
        .collect();
    Ok(HttpResponse::Ok().json(crate::api::ResponseEnvelope::new(200, data)))
}

/// `GET /products`: filtered, sorted, projected, paged list.
pub async fn list_products(
    _claims: Claims,
    req: HttpRequest,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let (items, total) = list_page(&service, req.query_string()).await?;
    Ok(list_response(&items, total))
}

/// `GET /products/{id}/sources`: one entry per contribution.
pub async fn get_sources(
    _claims: Claims,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let record = load(&service, &id).await?;
    let entries: Vec<Value> = record
        .contributions
        .into_iter()
        .map(|c| {
            json!({
                "source": c.source,
                "eventId": c.event_id,
                "time": rfc3339(c.time),
                "receivedAt": rfc3339(c.received_at),
                "value": c.value,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}

/// `GET /products/{id}/history`: the merged document's changes, oldest first, each with
/// the hash of the merge rules that made it (so a change caused by a rule edit, e.g. a
/// `pinv remerge`, can be told apart from one caused by new data).
pub async fn get_history(
    _claims: Claims,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    // A deleted product keeps its history (its last entry says `deleted`).
    let pinv_id = parse_id(&id)?;
    let mut entries = service.store.history(&pinv_id).await?;
    if entries.is_empty() {
        load(&service, &id).await?;
    }
    entries.sort_by_key(|e| e.revision);
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut entry = json!({
                "revision": e.revision,
                "time": rfc3339(e.time),
                "event": {"source": e.event.source, "id": e.event.id},
                "rulesHash": e.rules_hash,
                "patch": e.patch,
            });
            if e.deleted {
                entry["deleted"] = Value::Bool(true);
            }
            entry
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ErrorCode;

    #[test]
    fn list_errors_are_bad_query_naming_the_parameter() {
        for (q, name) in [
            ("limit=0", "limit"),
            ("status=~a", "status"),
            ("a..b=1", "a..b"),
        ] {
            let e = parse_list_query(q).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadQuery, "{q}");
            assert!(
                e.message.starts_with(&format!("query parameter '{name}'")),
                "{q}: {}",
                e.message
            );
        }
    }

    #[test]
    fn non_uuid_id_is_not_found() {
        assert_eq!(
            parse_id("41-1234567").unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
