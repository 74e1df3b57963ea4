//! The HTTP shell: parses requests, calls the service or the store, renders answers.
//!
//! Every route is listed once in [`ROUTES`]; [`configure`] registers exactly that table and
//! the OpenAPI test checks the document against it, so a route cannot go undocumented.

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::error::{ApiError, ErrorCode};

pub mod adapters;
pub mod admin;
pub mod auth;
pub mod error;
pub mod health;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod openapi_tmf_write;
pub mod products;
pub mod provenance;
pub mod query;
pub mod reads;
pub mod schema;
pub mod tmf;
pub mod tmf_write;
pub mod ui;

/// One route: method, path pattern (actix syntax, which is also OpenAPI's) and its handler.
pub struct RouteDef {
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, e.g. `/products/{id}`.
    pub path: &'static str,
    /// Builds the actix route (method guard + handler).
    pub route: fn() -> actix_web::Route,
}

/// Every route of the API.
pub const ROUTES: &[RouteDef] = &[
    RouteDef {
        method: Method::POST,
        path: "/products",
        route: || web::post().to(products::post_products),
    },
    RouteDef {
        method: Method::GET,
        path: "/products",
        route: || web::get().to(reads::list_products),
    },
    RouteDef {
        method: Method::GET,
        path: "/products/{id}",
        route: || web::get().to(reads::get_product),
    },
    RouteDef {
        method: Method::GET,
        path: "/tmf-api/productInventory/v5/product",
        route: || web::get().to(tmf::list_products),
    },
    RouteDef {
        method: Method::GET,
        path: "/tmf-api/productInventory/v5/product/{id}",
        route: || web::get().to(tmf::get_product),
    },
    RouteDef {
        method: Method::GET,
        path: "/products/{id}/sources",
        route: || web::get().to(reads::get_sources),
    },
    RouteDef {
        method: Method::GET,
        path: "/products/{id}/history",
        route: || web::get().to(reads::get_history),
    },
    RouteDef {
        method: Method::DELETE,
        path: "/products/{id}/sources/{source}",
        route: || web::delete().to(tmf_write::delete_source),
    },
    RouteDef {
        method: Method::POST,
        path: "/tmf-api/productInventory/v5/product",
        route: || web::post().to(tmf_write::post_product),
    },
    RouteDef {
        method: Method::PATCH,
        path: "/tmf-api/productInventory/v5/product/{id}",
        route: || web::patch().to(tmf_write::patch_product),
    },
    RouteDef {
        method: Method::DELETE,
        path: "/tmf-api/productInventory/v5/product/{id}",
        route: || web::delete().to(tmf_write::delete_product),
    },
    RouteDef {
        method: Method::POST,
        path: "/adapters/{system}",
        route: || web::post().to(adapters::post_adapter),
    },
    RouteDef {
        method: Method::GET,
        path: "/products/{id}/provenance",
        route: || web::get().to(provenance::get_provenance),
    },
    RouteDef {
        method: Method::GET,
        path: "/tmf-api/productInventory/v5/product/{id}/provenance",
        route: || web::get().to(provenance::get_provenance),
    },
    RouteDef {
        method: Method::POST,
        path: "/admin/remerge",
        route: || web::post().to(admin::post_remerge),
    },
    RouteDef {
        method: Method::GET,
        path: "/admin/remerge/{id}",
        route: || web::get().to(admin::get_remerge),
    },
    RouteDef {
        method: Method::GET,
        path: "/schema/{file}",
        route: || web::get().to(schema::get_schema),
    },
    RouteDef {
        method: Method::GET,
        path: "/health/live",
        route: || web::get().to(health::live),
    },
    RouteDef {
        method: Method::GET,
        path: "/health/ready",
        route: || web::get().to(health::ready),
    },
    RouteDef {
        method: Method::GET,
        path: "/metrics",
        route: || web::get().to(metrics::get_metrics),
    },
    RouteDef {
        method: Method::GET,
        path: "/openapi.json",
        route: || web::get().to(openapi::get_openapi),
    },
    RouteDef {
        method: Method::POST,
        path: "/tmf-api/productInventory/v5/hub",
        route: || web::post().to(hub::post_hub),
    },
    RouteDef {
        method: Method::GET,
        path: "/tmf-api/productInventory/v5/hub/{id}",
        route: || web::get().to(hub::get_hub),
    },
    RouteDef {
        method: Method::DELETE,
        path: "/tmf-api/productInventory/v5/hub/{id}",
        route: || web::delete().to(hub::delete_hub),
    },
];

/// Registers every route of [`ROUTES`], answering `405` for other methods on a known path
/// and `404` for unknown paths, both as error JSON, and makes every extractor's failure
/// answer the error JSON too.
pub fn configure(cfg: &mut web::ServiceConfig) {
    extractor_errors(cfg);
    let mut by_path: BTreeMap<&'static str, Vec<&RouteDef>> = BTreeMap::new();
    for def in ROUTES {
        by_path.entry(def.path).or_default().push(def);
    }
    for (path, defs) in by_path {
        let allow = defs
            .iter()
            .map(|d| d.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut resource = web::resource(path);
        for def in defs {
            resource = resource.route((def.route)());
        }
        resource = resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move {
                let mut e = ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{} is not allowed on {}", req.method(), req.path()),
                );
                e.allow = Some(allow);
                Err::<HttpResponse, _>(e)
            }
        }));
        let resource = resource.wrap(actix_web::middleware::from_fn(
            crate::api::middleware::catch_panics,
        ));
        if path.starts_with(tmf_write::TMF_BASE) {
            cfg.service(resource.wrap(actix_web::middleware::from_fn(tmf_write::tmf_errors)));
        } else {
            cfg.service(resource);
        }
    }
}

/// Extractor failures as error JSON, for every extractor with an error hook (actix-web
/// answers them as plain text otherwise). `web::Payload`, `Bytes` and `String` have none:
/// handlers read bodies through `web::Payload`, whose errors they map themselves.
fn extractor_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|e, req| {
        ApiError::new(ErrorCode::NotFound, format!("{}: {e}", req.path())).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::from(e).into()))
    .app_data(web::JsonConfig::default().error_handler(|e, _| ApiError::from(e).into()))
    .app_data(web::FormConfig::default().error_handler(|e, _| ApiError::from(e).into()));
}

/// The fallback for paths no route matches.
pub async fn route_not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route {} {}", req.method(), req.path()),
    ))
}

/// Now, as the API writes timestamps: RFC 3339 UTC with milliseconds.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `{status, timestamp, responseData}` answer of `POST /products` and of package
/// reads, serialised straight from the documents it borrows: building it with `json!`
/// copied every document twice before the one serialisation that matters.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseEnvelope<'a, D: serde::Serialize = serde_json::Value> {
    /// The HTTP status, repeated in the body.
    pub status: u16,
    /// When the answer was made ([`timestamp`]).
    pub timestamp: String,
    /// One entry per document.
    pub response_data: Vec<ResponsePart<'a, D>>,
}

/// One entry of `responseData`, with the merged document as `D` (a tree, or a POST's
/// `Document`, whose JSON is made already).
#[derive(serde::Serialize)]
pub struct ResponsePart<'a, D: serde::Serialize = serde_json::Value> {
    /// The request's headers as echoed (POST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The merged document.
    pub value: &'a D,
}

impl<'a, D: serde::Serialize> ResponseEnvelope<'a, D> {
    /// An answer with `status` and the parts, stamped now.
    pub fn new(status: u16, response_data: Vec<ResponsePart<'a, D>>) -> Self {
        Self {
            status,
            timestamp: timestamp(),
            response_data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use serde_json::Value;

    /// A route per extractor, behind the app's extractor configuration.
    async fn probe(req: test::TestRequest) -> (u16, Value) {
        #[derive(serde::Deserialize)]
        struct Form {
            _n: u32,
        }
        let app = test::init_service(
            App::new()
                .configure(extractor_errors)
                .route("/path/{n}", web::get().to(|_: web::Path<u32>| async { "" }))
                .route(
                    "/query",
                    web::get()
                        .to(|_: web::Query<std::collections::HashMap<String, u32>>| async { "" }),
                )
                .route(
                    "/json",
                    web::post().to(|_: web::Json<Vec<u32>>| async { "" }),
                )
                .route("/form", web::post().to(|_: web::Form<Form>| async { "" })),
        )
        .await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let body = test::read_body(res).await;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
        (status, json)
    }

    #[actix_web::test]
    async fn every_extractor_error_is_the_error_json() {
        let post = |uri: &str, ct: &str, body: &'static str| {
            test::TestRequest::post()
                .uri(uri)
                .insert_header(("content-type", ct))
                .set_payload(body)
        };
        let cases = [
            (test::TestRequest::get().uri("/path/x"), 404, "NOT_FOUND"),
            (test::TestRequest::get().uri("/query?a=x"), 400, "BAD_QUERY"),
            (
                post("/json", "application/json", "[1,"),
                400,
                "MALFORMED_JSON",
            ),
            (
                post("/json", "application/json", "{}"),
                400,
                "VALIDATION_FAILED",
            ),
            (
                post("/json", "text/plain", "[1]"),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                post("/form", "application/x-www-form-urlencoded", "_n=x"),
                400,
                "VALIDATION_FAILED",
            ),
            (
                post("/form", "application/json", "_n=1"),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
        ];
        for (req, status, code) in cases {
            let (got, body) = probe(req).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
            assert_eq!(body["status"], status);
        }
    }
}
