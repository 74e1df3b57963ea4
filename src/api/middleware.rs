//! HTTP middleware: one structured log line and the request metrics per request
//! ([`observe`]), and a panic in a handler answered as `500 INTERNAL` ([`catch_panics`]).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use futures_util::FutureExt;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::core::traceparent::trace_id;

/// What a handler learned about a request that the request line should carry.
/// Handlers insert it into the request extensions.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `headers.source` of a POST body.
    pub source: Option<String>,
    /// `headers.id` of a POST body.
    pub event_id: Option<String>,
    /// The W3C trace id of the envelope's `traceparent`.
    pub trace_id: Option<String>,
}

/// Resource-level middleware: a panic in a handler answers `500 INTERNAL` instead of
/// dropping the connection (and killing the worker).
///
/// It must wrap resources, not the app: it keeps a clone of the request, and the app's
/// router needs the only reference to the request while it matches the path.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let http_req = req.request().clone();
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(res) => Ok(res?.map_into_left_body()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "handler panicked");
            let error = ApiError::new(ErrorCode::Internal, "internal error; see the server log");
            let response = actix_web::HttpResponse::from_error(error);
            Ok(ServiceResponse::new(http_req, response).map_into_right_body())
        }
    }
}

/// Middleware: times the request, records metrics by route pattern, logs one line.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    // The pattern, not the raw path: `/products/{id}` stays one label whatever the id.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let header_trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
        .map(str::to_owned);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let res = next.call(req).await?;

    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let error_code = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(|e| e.code.code());
    if let Some(m) = &metrics {
        m.observe_request(method.as_str(), &route, status, elapsed.as_secs_f64());
        if method == Method::POST && route == "/products" {
            match (status, error_code) {
                (201, _) => m.observe_post("created", ""),
                (200, _) => m.observe_post("unchanged", ""),
                (_, Some(code)) => m.observe_post("error", code),
                (_, None) => m.observe_post("error", "OTHER"),
            }
        }
    }
    let ctx = res
        .request()
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_default();
    let trace = header_trace.or(ctx.trace_id);
    tracing::info!(
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        source = ctx.source.as_deref().unwrap_or(""),
        event_id = ctx.event_id.as_deref().unwrap_or(""),
        trace_id = trace.as_deref().unwrap_or(""),
        error = error_code.unwrap_or(""),
        "request"
    );
    Ok(res)
}
