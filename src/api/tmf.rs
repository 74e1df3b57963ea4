//! The TMF637 v5 surface, `/tmf-api/productInventory/v5/product...`: the same merged
//! documents, query language and JWT rules as `/products` (the handlers share the code of
//! [`crate::api::reads`]), with `href` absolute.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::api::auth::Claims;
use crate::api::error::ApiError;
use crate::api::reads::{list_page, list_response, load, parse_list_query};
use crate::app::service::Service;
use crate::config::Settings;
use crate::core::query;

/// The base path of the surface.
pub const BASE: &str = "/tmf-api/productInventory/v5";

/// `GET /tmf-api/productInventory/v5/product`: as `GET /products`.
pub async fn list_products(
    _claims: Claims,
    req: HttpRequest,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let (mut items, total) = list_page(&service, req.query_string()).await?;
    let base = public_base(&req, &settings);
    for item in &mut items {
        absolute_hrefs(item, &base);
    }
    Ok(list_response(&items, total))
}

/// `GET /tmf-api/productInventory/v5/product/{id}[?fields=...]`: the merged document.
pub async fn get_product(
    _claims: Claims,
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    // Only `fields` means something for one product.
    let parsed = parse_list_query(req.query_string())?;
    if let Some(filter) = parsed.filters.first() {
        return Err(ApiError::bad_query(
            &filter.dotted_path(),
            "is not a parameter of this route (only fields)",
        ));
    }
    for (name, set) in [
        ("sort", !parsed.sort.is_empty()),
        ("offset", parsed.offset != 0),
        ("limit", parsed.limit != query::DEFAULT_LIMIT),
    ] {
        if set || has_parameter(req.query_string(), name) {
            return Err(ApiError::bad_query(
                name,
                "is not a parameter of this route (only fields)",
            ));
        }
    }
    let record = load(&service, &id).await?;
    let mut doc = parsed.project(record.merged);
    absolute_hrefs(&mut doc, &public_base(&req, &settings));
    Ok(HttpResponse::Ok().json(doc))
}

fn has_parameter(query_string: &str, name: &str) -> bool {
    query_string
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(n, _)| n) == name)
}

/// `PINV_PUBLIC_URL`, else the request's scheme and host.
fn public_base(req: &HttpRequest, settings: &Settings) -> String {
    match &settings.server.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// Rewrites PINV's relative product links (`/products/{id}`) of `doc` and of its
/// relationships into this surface's absolute ones.
pub fn absolute_hrefs(doc: &mut Value, base: &str) {
    let rewrite = |v: &mut Value| {
        if let Some(Value::String(href)) = v.get_mut("href") {
            if let Some(id) = href.strip_prefix("/products/") {
                *href = format!("{base}{BASE}/product/{id}");
            }
        }
    };
    rewrite(doc);
    if let Some(Value::Array(items)) = doc.get_mut("productRelationship") {
        for item in items {
            rewrite(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn relative_product_links_become_absolute_and_others_stay() {
        let mut doc = json!({
            "id": "a", "href": "/products/a",
            "productRelationship": [{"id": "b", "href": "/products/b"}, {"href": "http://x/y"}]
        });
        absolute_hrefs(&mut doc, "https://pinv.example");
        assert_eq!(
            doc,
            json!({
                "id": "a",
                "href": "https://pinv.example/tmf-api/productInventory/v5/product/a",
                "productRelationship": [
                    {"id": "b", "href": "https://pinv.example/tmf-api/productInventory/v5/product/b"},
                    {"href": "http://x/y"}
                ]
            })
        );
    }
}
