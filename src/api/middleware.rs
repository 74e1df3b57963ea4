//! HTTP middleware: one structured log line and the request metrics per request, and the
//! `request` span everything done for the request runs in ([`observe`]); a panic in a
//! handler answered as `500 INTERNAL` ([`catch_panics`]).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::FutureExt;
use tracing::Instrument;

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

impl RequestContext {
    /// Hands the context to [`observe`] for the request line, and records it in the
    /// request span (the trace id only when the `traceparent` HTTP header gave none), so
    /// that the spans and lines below it carry the source and event id.
    pub fn attach(self, req: &HttpRequest) {
        let span = tracing::Span::current();
        if let Some(source) = &self.source {
            span.record("source", source.as_str());
        }
        if let Some(event_id) = &self.event_id {
            span.record("event_id", event_id.as_str());
        }
        if let Some(trace) = &self.trace_id {
            if header_trace_id(req.headers()).is_none() {
                span.record("trace_id", trace.as_str());
            }
        }
        req.extensions_mut().insert(self);
    }
}

/// The trace id of a valid `traceparent` HTTP header.
fn header_trace_id(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
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
///
/// The request runs in an `info` span `request` with a fresh `request_id`, the method, the
/// route, the trace id (of the `traceparent` header, else of the envelope) and, once the
/// handler knows them ([`RequestContext::attach`]), the source and event id: every span
/// and line below it (service calls, store calls at `debug`) carries them. The request line
/// itself is logged after the span, with the same `request_id`.
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
    let header_trace = header_trace_id(req.headers()).map(str::to_owned);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        trace_id = header_trace.as_deref(),
        source = tracing::field::Empty,
        event_id = tracing::field::Empty,
    );
    let res = next.call(req).instrument(span).await?;

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
        request_id = %request_id,
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
    use std::sync::{Arc, Mutex};

    use actix_web::{middleware::from_fn, test, App, HttpResponse};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn handler(req: HttpRequest) -> HttpResponse {
        RequestContext {
            source: Some("billing".into()),
            event_id: Some("e-1".into()),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
        }
        .attach(&req);
        tracing::debug_span!("service.call").in_scope(|| tracing::debug!("inside"));
        HttpResponse::Ok().finish()
    }

    const HEADER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    /// What one request to a handler that logs at `debug` writes to the log at `level`.
    async fn log_of_one_request(level: tracing::Level) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(from_fn(observe))
                .route("/x", web::get().to(handler)),
        )
        .await;
        let req = test::TestRequest::get()
            .uri("/x")
            .insert_header((
                "traceparent",
                format!("00-{HEADER_TRACE}-00f067aa0ba902b7-01"),
            ))
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 200);
        let text = captured.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[actix_web::test]
    async fn at_info_a_request_writes_its_request_line_only() {
        let text = log_of_one_request(tracing::Level::INFO).await;
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" request "), "{text}");
    }

    #[actix_web::test]
    async fn lines_inside_a_request_carry_its_request_id_trace_source_and_event() {
        let text = log_of_one_request(tracing::Level::DEBUG).await;
        let inside = text.lines().find(|l| l.contains("inside")).expect(&text);
        let request_id = inside
            .split("request_id=")
            .nth(1)
            .and_then(|rest| rest.split([' ', '}']).next())
            .expect(inside);
        assert_eq!(request_id.len(), 32, "{inside}");
        for field in [
            format!("trace_id=\"{HEADER_TRACE}\""),
            "source=\"billing\"".to_owned(),
            "event_id=\"e-1\"".to_owned(),
            "service.call".to_owned(),
        ] {
            assert!(inside.contains(&field), "{field} missing in {inside}");
        }
        assert!(
            !inside.contains("0af7651916cd43dd8448eb211c80319c"),
            "the header's trace id wins over the envelope's: {inside}"
        );
        let request_lines: Vec<&str> = text.lines().filter(|l| l.contains(" request ")).collect();
        assert_eq!(request_lines.len(), 1, "one request line: {text}");
        assert!(
            request_lines[0].contains(&format!("request_id={request_id}")),
            "{text}"
        );
    }
}
