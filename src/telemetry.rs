//! Logging and per-request instrumentation.
//!
//! [`init`] installs the subscriber; [`observe`] is the middleware that writes one
//! structured line per request and records the request metrics.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing_subscriber::EnvFilter;

use futures_util::FutureExt;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::metrics::{Metrics, UNMATCHED_ROUTE};

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), human-readable
/// lines with key=value fields on stderr. Calling it twice is harmless (the second call is ignored).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr so that stdout carries only what a command prints (a token, the
    // dev curl line); colours only when a person is watching.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

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

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or
/// `None` when it is malformed (a malformed one is ignored, per §3).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let [version, trace, parent, flags] = parts.as_slice() else {
        return None;
    };
    let zeros = |s: &str| s.bytes().all(|b| b == b'0');
    let ok = hex(version, 2)
        && *version != "ff"
        && hex(trace, 32)
        && !zeros(trace)
        && hex(parent, 16)
        && !zeros(parent)
        && hex(flags, 2);
    ok.then_some(*trace)
}

/// Whether `traceparent` is well-formed.
pub fn is_valid_traceparent(traceparent: &str) -> bool {
    trace_id(traceparent).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_traceparent_gives_its_trace_id() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for t in [
            "...",
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(t), "{t}");
        }
    }
}
