//! `POST /products`: the write path's HTTP shell.
//!
//! Order of checks: token (401), query (400), content type (415), size (413), a share of the
//! body budget (503 `SERVER_BUSY` after waiting), the body within its time (408), JSON (400),
//! then everything else is the service's business.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;

use crate::api::auth::Claims;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::limits::{BodyBudget, BodyReservation, BUDGET_WAIT};
use crate::api::middleware::RequestContext;
use crate::api::{ResponseEnvelope, ResponsePart};
use crate::app::service::{PostOptions, PostStatus, Service};
use crate::config::Settings;
use crate::core::traceparent;
use crate::core::Violation;

/// The name of the package option.
pub const AS_ADI_PACKAGE: &str = "as-adi-package";

/// `POST /products[?as-adi-package[=true|false]]`.
pub async fn post_products(
    claims: Claims,
    req: HttpRequest,
    payload: web::Payload,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
    budget: web::Data<BodyBudget>,
) -> Result<HttpResponse, ApiError> {
    let mut options = PostOptions {
        as_adi_package: as_adi_package(req.query_string())?,
        body_bytes: 0,
    };
    require_json(&req)?;
    // Held until the answer is built: parsing and merging cost a multiple of the body.
    let (body, body_bytes, _reservation) = read_json(&req, payload, &settings, &budget).await?;
    options.body_bytes = body_bytes;
    context_of(&body).attach(&req);

    let outcome = service
        .post(body, options, &|s| claims.may_write(s))
        .await?;

    let status = match outcome.status {
        PostStatus::Created => actix_web::http::StatusCode::CREATED,
        PostStatus::Unchanged => actix_web::http::StatusCode::OK,
    };
    let echoed_trace = request_traceparent(&req).or_else(|| {
        outcome
            .parts
            .first()
            .and_then(|p| p.headers.get("traceparent"))
            .and_then(Value::as_str)
            .filter(|t| traceparent::is_valid(t))
            .map(str::to_owned)
    });
    let data = outcome
        .parts
        .iter()
        .map(|p| ResponsePart {
            headers: Some(&p.headers),
            value: &p.value,
        })
        .collect();
    let mut res = HttpResponse::build(status);
    if let Some(t) = echoed_trace.and_then(|t| HeaderValue::from_str(&t).ok()) {
        res.insert_header((header::HeaderName::from_static("traceparent"), t));
    }
    Ok(res.json(ResponseEnvelope::new(status.as_u16(), data)))
}

/// Reads a JSON body under the write routes' limits: the declared size (`413`), a share of
/// the body budget (`503 SERVER_BUSY` after waiting), the body within its time (`408`),
/// JSON syntax (`400`). Returns the body, its length in bytes, and the budget share, to hold
/// until the answer is built (a write costs a multiple of its body).
pub(crate) async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    settings: &Settings,
    budget: &BodyBudget,
) -> Result<(Value, usize, BodyReservation), ApiError> {
    let max = settings.server.max_body_bytes;
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let reservation = budget
        .reserve(
            declared.unwrap_or(max),
            BUDGET_WAIT.min(settings.server.body_timeout),
        )
        .await?;
    let bytes = read_body(payload, declared, max, settings.server.body_timeout).await?;
    Ok((parse_json(&bytes)?, bytes.len(), reservation))
}

/// Reads `as-adi-package` from a query string: absent is `false`; given without a value
/// (`?as-adi-package` or `?as-adi-package=`) is `true`.
pub fn as_adi_package(query: &str) -> Result<bool, ApiError> {
    Ok(
        crate::api::query::flag(&crate::api::query::pairs(query)?, AS_ADI_PACKAGE)?
            .unwrap_or(false),
    )
}

/// `415` unless the body is `application/json` (a UTF-8 charset parameter is allowed).
pub(crate) fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let refuse = |what: &str| {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type must be application/json, not {what}"),
        ))
    };
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return refuse("missing");
    };
    let Ok(text) = value.to_str() else {
        return refuse("unreadable");
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return refuse(&format!("'{essence}'"));
    }
    for param in parts {
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        let val = val.trim().trim_matches('"');
        // JSON is UTF-8 (RFC 8259); any other charset would be decoded wrongly.
        if name.trim().eq_ignore_ascii_case("charset")
            && !(val.eq_ignore_ascii_case("utf-8") || val.eq_ignore_ascii_case("utf8"))
        {
            return refuse(&format!("charset '{val}'"));
        }
    }
    Ok(())
}

pub(crate) fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than {max} bytes"),
    )
}

pub(crate) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads the body, refusing it as soon as it exceeds `max` bytes (never buffers more), and
/// with `408` unless all of it arrives within `timeout`: a client trickling its body would
/// otherwise hold a connection and its buffer for as long as it likes.
pub(crate) async fn read_body(
    mut payload: web::Payload,
    declared: Option<usize>,
    max: usize,
    timeout: Duration,
) -> Result<web::Bytes, ApiError> {
    let read = async {
        let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(max));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    ErrorCode::MalformedJson,
                    format!("the body could not be read: {e}"),
                )
            })?;
            if buf.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the body did not arrive in full within {} s",
                timeout.as_secs_f64()
            ),
        )
    })?
}

/// Parses JSON; the error names the line and column. serde_json's recursion limit (128)
/// turns absurdly deep input into an error here instead of a stack overflow. Objects are
/// built at their final size ([`crate::core::value`]).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    crate::core::value::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
        .with_details(vec![Violation::new("", e.to_string())])
    })
}

/// Source, event id and trace id of a body, for the request log line; whatever is missing
/// or not a string is left out (the service reports it properly).
fn context_of(body: &Value) -> RequestContext {
    let header = |name: &str| {
        body.get("headers")
            .and_then(|h| h.get(name))
            .and_then(Value::as_str)
    };
    RequestContext {
        source: header("source").map(|s| s.chars().take(64).collect()),
        event_id: header("id").map(|s| s.chars().take(256).collect()),
        trace_id: header("traceparent")
            .and_then(traceparent::trace_id)
            .map(str::to_owned),
    }
}

fn request_traceparent(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| traceparent::is_valid(t))
        .map(|t| t.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use serde_json::json;

    #[test]
    fn as_adi_package_accepts_true_false_and_no_value() {
        assert!(!as_adi_package("").unwrap());
        assert!(as_adi_package("as-adi-package=true").unwrap());
        assert!(!as_adi_package("as-adi-package=false").unwrap());
        assert!(as_adi_package("as-adi-package=").unwrap());
        assert!(as_adi_package("as-adi-package").unwrap());
        let e = as_adi_package("as-adi-package=yes").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadQuery);
    }

    #[test]
    fn content_type_must_be_json_with_utf8_charset_at_most() {
        let ok = |ct: &str| {
            require_json(
                &TestRequest::default()
                    .insert_header((header::CONTENT_TYPE, ct))
                    .to_http_request(),
            )
            .is_ok()
        };
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=UTF-8"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/json; charset=latin1"));
        assert!(!ok("application/jsonx"));
        assert!(require_json(&TestRequest::default().to_http_request()).is_err());
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let e = parse_json(b"{\n  \"a\": }").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        assert!(e.message.contains("line 2 column"), "{}", e.message);
    }

    #[test]
    fn very_deep_json_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().code,
            ErrorCode::MalformedJson
        );
    }

    #[test]
    fn context_takes_strings_from_headers_only() {
        let ctx = context_of(&json!({"headers": {"source": "billing", "id": 5,
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}));
        assert_eq!(ctx.source.as_deref(), Some("billing"));
        assert_eq!(ctx.event_id, None);
        assert_eq!(
            ctx.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
