//! The `GET /products...` routes: reads go to the store directly, through the service's
//! handle, since they need none of the write path's logic.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::api::auth::Claims;
use crate::api::error::ApiError;
use crate::api::products::as_adi_package;
use crate::app::service::Service;
use crate::core::record::ProductRecord;
use crate::core::{filter, PinvId};
use crate::store::ListQuery;

/// Default page size of `GET /products`.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size of `GET /products`.
pub const MAX_LIMIT: u64 = 1000;

/// A parsed `GET /products` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    /// Filters, offset and limit for the store.
    pub query: ListQuery,
    /// `fields=` projection, if asked.
    pub fields: Option<Vec<String>>,
}

impl ListParams {
    /// Parses a query string: `fields`, `offset`, `limit`; every other parameter is an
    /// equality filter on a dotted path.
    pub fn parse(query_string: &str) -> Result<Self, ApiError> {
        let pairs = crate::api::query::pairs(query_string)?;
        let mut query = ListQuery {
            filters: Vec::new(),
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        let mut fields = None;
        for (name, value) in pairs {
            match name.as_str() {
                "fields" => {
                    let list: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if list.is_empty() {
                        return Err(ApiError::bad_query(
                            "fields",
                            "must name at least one field",
                        ));
                    }
                    fields = Some(list);
                }
                "offset" => {
                    query.offset = value.parse().map_err(|e: std::num::ParseIntError| {
                        let problem = match e.kind() {
                            std::num::IntErrorKind::PosOverflow => {
                                format!("'{value}' is too large (at most {})", u64::MAX)
                            }
                            _ => format!("'{value}' is not a whole number from 0"),
                        };
                        ApiError::bad_query("offset", problem)
                    })?;
                }
                "limit" => {
                    query.limit = match value.parse::<u64>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => {
                            return Err(ApiError::bad_query(
                                "limit",
                                format!("'{value}' is not a number from 1 to {MAX_LIMIT}"),
                            ))
                        }
                    };
                }
                _ => {
                    if name.is_empty() || name.split('.').any(str::is_empty) {
                        return Err(ApiError::bad_query(&name, "is not a dotted attribute path"));
                    }
                    query.filters.push((name, value));
                }
            }
        }
        Ok(Self { query, fields })
    }
}

fn parse_id(raw: &str) -> Result<PinvId, ApiError> {
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
    let record = load(&service, &id).await?;
    if !package {
        return Ok(HttpResponse::Ok().json(record.merged));
    }
    let others = match record.package_root {
        Some(root) => service.package_members([root], &[record.id]).await?,
        None => Vec::new(),
    };
    let data: Vec<Value> = std::iter::once(record.merged)
        .chain(others.into_iter().map(|r| r.merged))
        .map(|v| json!({"value": v}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "status": 200,
        "timestamp": crate::api::timestamp(),
        "responseData": data,
    })))
}

/// `GET /products`: filtered, projected, paged list.
pub async fn list_products(
    _claims: Claims,
    req: HttpRequest,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let params = ListParams::parse(req.query_string())?;
    let page = service.store.list(&params.query).await?;
    let items: Vec<Value> = match &params.fields {
        Some(fields) => page
            .items
            .iter()
            .map(|d| filter::project(d, fields))
            .collect(),
        None => page.items,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", page.total.to_string()))
        .insert_header(("X-Result-Count", items.len().to_string()))
        .json(items))
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
    let record = load(&service, &id).await?;
    let mut entries = service.store.history(&record.id).await?;
    entries.sort_by_key(|e| e.revision);
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "revision": e.revision,
                "time": rfc3339(e.time),
                "event": {"source": e.event.source, "id": e.event.id},
                "rulesHash": e.rules_hash,
                "patch": e.patch,
            })
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
    fn list_defaults_and_filters() {
        let p = ListParams::parse("status=active&externalReference.id=X").unwrap();
        assert_eq!(p.query.offset, 0);
        assert_eq!(p.query.limit, DEFAULT_LIMIT);
        assert_eq!(
            p.query.filters,
            vec![
                ("status".to_string(), "active".to_string()),
                ("externalReference.id".to_string(), "X".to_string())
            ]
        );
        assert_eq!(p.fields, None);
    }

    #[test]
    fn list_reads_fields_offset_and_limit() {
        let p = ListParams::parse("fields=name,%20status&offset=5&limit=1000").unwrap();
        assert_eq!(
            p.fields,
            Some(vec!["name".to_string(), "status".to_string()])
        );
        assert_eq!(p.query.offset, 5);
        assert_eq!(p.query.limit, 1000);
        assert!(p.query.filters.is_empty());
    }

    #[test]
    fn bad_paging_is_bad_query() {
        for q in [
            "limit=abc",
            "limit=1001",
            "limit=0",
            "limit=-1",
            "offset=x",
            "fields=",
            "a..b=1",
        ] {
            let e = ListParams::parse(q).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadQuery, "{q}");
        }
    }

    #[test]
    fn offset_beyond_u64_is_too_large_not_a_non_number() {
        let e = ListParams::parse("offset=18446744073709551616").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadQuery);
        assert!(e.message.contains("too large"), "{}", e.message);
        assert_eq!(
            ListParams::parse("offset=18446744073709551615")
                .unwrap()
                .query
                .offset,
            u64::MAX
        );
    }

    #[test]
    fn non_uuid_id_is_not_found() {
        assert_eq!(
            parse_id("41-1234567").unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
