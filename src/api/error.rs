//! The one table of API error codes, and the error every handler returns.
//!
//! Every error of every layer converts into an [`ApiError`] once; no handler builds error
//! JSON by hand. Clients match on [`ErrorCode::code`], which never changes once published.

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::app::service::IngestError;
use crate::core::Violation;
use crate::store::StoreError;

/// Seconds a client should wait before retrying after a `503`.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Every error PINV's API can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not JSON.
    MalformedJson,
    /// The envelope or a document breaks a rule or the schema.
    ValidationFailed,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// No valid bearer token.
    Unauthorized,
    /// The token may not write for a source of the request.
    ForbiddenSource,
    /// No such product (or schema file).
    NotFound,
    /// The event id was used before with a different value.
    EventIdReused,
    /// The document matches several stored products.
    IdentityConflict,
    /// The store cannot be reached; try again.
    StoreUnavailable,
    /// A write was sent to the store but its outcome is unknown; retrying the same event is
    /// safe.
    CommitOutcomeUnknown,
    /// A bug or an unexpected store failure.
    Internal,
    /// A query parameter is invalid.
    BadQuery,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// No such route.
    RouteNotFound,
    /// The body did not arrive in full within the configured time.
    RequestTimeout,
    /// Too many request bodies are being handled at once; try again.
    ServerBusy,
    /// The route needs a token with the admin claim.
    AdminRequired,
    /// A re-merge run is already running on this server.
    RemergeRunning,
    /// The server's loaded merge rules are not the ones the request expects.
    RulesHashMismatch,
    /// A request header (`PINV-Source`, `Idempotency-Key`) is missing or invalid.
    BadHeader,
    /// A JSON patch's `test` operation failed.
    PatchTestFailed,
    /// A patch is not a valid patch or cannot be applied (a path that does not exist).
    PatchInvalid,
    /// A hub subscription's callback is not an allowed http(s) URL.
    BadCallback,
    /// A hub subscription's query is invalid.
    BadHubQuery,
    /// `?at=` names a revision whose merge cannot be reproduced exactly.
    RevisionNotExplainable,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::MalformedJson,
        Self::ValidationFailed,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::Unauthorized,
        Self::ForbiddenSource,
        Self::NotFound,
        Self::EventIdReused,
        Self::IdentityConflict,
        Self::StoreUnavailable,
        Self::CommitOutcomeUnknown,
        Self::Internal,
        Self::BadQuery,
        Self::MethodNotAllowed,
        Self::RouteNotFound,
        Self::RequestTimeout,
        Self::ServerBusy,
        Self::AdminRequired,
        Self::RemergeRunning,
        Self::RulesHashMismatch,
        Self::BadHeader,
        Self::PatchTestFailed,
        Self::PatchInvalid,
        Self::BadCallback,
        Self::BadHubQuery,
        Self::RevisionNotExplainable,
    ];

    /// The table: HTTP status, stable code, short reason.
    const fn info(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MalformedJson => (
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                "The body is not valid JSON",
            ),
            Self::ValidationFailed => (
                StatusCode::BAD_REQUEST,
                "VALIDATION_FAILED",
                "The request does not follow the envelope or product schema",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "The body must be application/json",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "The body is larger than the limit",
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "A valid bearer token is required",
            ),
            Self::ForbiddenSource => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN_SOURCE",
                "The token may not write for this source",
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", "No such resource"),
            Self::EventIdReused => (
                StatusCode::CONFLICT,
                "EVENT_ID_REUSED",
                "The event id was already used with a different value",
            ),
            Self::IdentityConflict => (
                StatusCode::CONFLICT,
                "IDENTITY_CONFLICT",
                "The document matches several stored products",
            ),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "The store is unavailable; retry later",
            ),
            Self::CommitOutcomeUnknown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "COMMIT_OUTCOME_UNKNOWN",
                "The write may or may not have been stored; retry the same event",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error",
            ),
            Self::BadQuery => (
                StatusCode::BAD_REQUEST,
                "BAD_QUERY",
                "A query parameter is invalid",
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "The route does not accept this method",
            ),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND", "No such route"),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The body did not arrive in time",
            ),
            Self::ServerBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_BUSY",
                "Too many large requests at once; retry later",
            ),
            Self::AdminRequired => (
                StatusCode::FORBIDDEN,
                "ADMIN_REQUIRED",
                "The token lacks the pinv_admin claim this route needs",
            ),
            Self::RemergeRunning => (
                StatusCode::CONFLICT,
                "REMERGE_RUNNING",
                "A re-merge is already running on this server",
            ),
            Self::RulesHashMismatch => (
                StatusCode::CONFLICT,
                "RULES_HASH_MISMATCH",
                "The server's loaded merge rules are not the expected ones",
            ),
            Self::BadHeader => (
                StatusCode::BAD_REQUEST,
                "BAD_HEADER",
                "A request header is missing or invalid",
            ),
            Self::PatchTestFailed => (
                StatusCode::CONFLICT,
                "PATCH_TEST_FAILED",
                "A test operation of the JSON patch failed",
            ),
            Self::PatchInvalid => (
                StatusCode::BAD_REQUEST,
                "PATCH_INVALID",
                "The patch is invalid or cannot be applied",
            ),
            Self::BadCallback => (
                StatusCode::BAD_REQUEST,
                "BAD_CALLBACK",
                "The callback is not an allowed http or https URL",
            ),
            Self::BadHubQuery => (
                StatusCode::BAD_REQUEST,
                "BAD_HUB_QUERY",
                "The subscription query is invalid",
            ),
            Self::RevisionNotExplainable => (
                StatusCode::BAD_REQUEST,
                "REVISION_NOT_EXPLAINABLE",
                "That revision's merge cannot be reproduced exactly from what PINV keeps",
            ),
        }
    }

    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        self.info().0
    }

    /// The stable UPPER_SNAKE code clients match on.
    pub const fn code(self) -> &'static str {
        self.info().1
    }

    /// A short, fixed explanation of the code.
    pub const fn reason(self) -> &'static str {
        self.info().2
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error answer: a code, a message for this occurrence, and located details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Which error.
    pub code: ErrorCode,
    /// What happened this time, for a human.
    pub message: String,
    /// One entry per located problem (JSON Pointers into the request body).
    pub details: Vec<Violation>,
    /// `WWW-Authenticate` value for `401`s.
    pub www_authenticate: Option<String>,
    /// `Allow` value for `405`s.
    pub allow: Option<String>,
}

impl ApiError {
    /// An error with a message and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            www_authenticate: None,
            allow: None,
        }
    }

    /// Adds located details.
    pub fn with_details(mut self, details: Vec<Violation>) -> Self {
        self.details = details;
        self
    }

    /// A `401` whose `WWW-Authenticate` header explains why the token was refused.
    pub fn unauthorized(description: &str) -> Self {
        // The description goes inside a quoted-string: keep it free of quotes and backslashes.
        let clean: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        let mut e = Self::new(ErrorCode::Unauthorized, description);
        e.www_authenticate = Some(format!(
            r#"Bearer realm="pinv", error="invalid_token", error_description="{clean}""#
        ));
        e
    }

    /// A `404` for a product id.
    pub fn product_not_found(id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no product with id '{id}'"))
    }

    /// A `400` about one query parameter.
    pub fn bad_query(parameter: &str, problem: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::BadQuery,
            format!("query parameter '{parameter}': {problem}"),
        )
    }

    /// The error body of the TMF637 surface: the OAS `Error` (`code`, `reason`, `message`,
    /// `status` as a string, `@type`), with PINV's stable code as `code` and the located
    /// `details`.
    pub fn tmf_body(&self) -> serde_json::Value {
        json!({
            "@type": "Error",
            "code": self.code.code(),
            "reason": self.code.reason(),
            "message": self.message,
            "status": self.code.status().as_u16().to_string(),
            "details": self.details,
        })
    }

    /// The error body of `docs/reference.md` §3.4.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "status": self.code.status().as_u16(),
            "timestamp": crate::api::timestamp(),
            "error": {
                "@type": "Error",
                "code": self.code.code(),
                "reason": self.code.reason(),
                "message": self.message,
                "details": self.details,
            }
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.code.status());
        res.content_type("application/json");
        if let Some(v) = &self.www_authenticate {
            res.insert_header((header::WWW_AUTHENTICATE, v.as_str()));
        }
        if let Some(v) = &self.allow {
            res.insert_header((header::ALLOW, v.as_str()));
        }
        if matches!(
            self.code,
            ErrorCode::StoreUnavailable | ErrorCode::CommitOutcomeUnknown | ErrorCode::ServerBusy
        ) {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS)));
        }
        // The rest of a late body may still be on its way: the connection cannot be reused.
        if self.code == ErrorCode::RequestTimeout {
            res.force_close();
        }
        res.body(self.body().to_string())
    }
}

// actix-web's extractors answer their own errors as plain text; these conversions (wired in
// `api::configure` through each extractor's config) give them the error JSON instead.

impl From<actix_web::error::JsonPayloadError> for ApiError {
    fn from(e: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::{JsonPayloadError as J, PayloadError as P};
        let code = match &e {
            J::OverflowKnownLength { .. } | J::Overflow { .. } | J::Payload(P::Overflow) => {
                ErrorCode::PayloadTooLarge
            }
            J::ContentType => ErrorCode::UnsupportedMediaType,
            J::Deserialize(de) if de.is_data() => ErrorCode::ValidationFailed,
            J::Serialize(_) => ErrorCode::Internal,
            _ => ErrorCode::MalformedJson,
        };
        Self::new(code, e.to_string())
    }
}

impl From<actix_web::error::UrlencodedError> for ApiError {
    fn from(e: actix_web::error::UrlencodedError) -> Self {
        use actix_web::error::{PayloadError as P, UrlencodedError as U};
        let code = match &e {
            U::Overflow { .. } | U::Payload(P::Overflow) => ErrorCode::PayloadTooLarge,
            U::ContentType => ErrorCode::UnsupportedMediaType,
            U::Serialize(_) => ErrorCode::Internal,
            _ => ErrorCode::ValidationFailed,
        };
        Self::new(code, e.to_string())
    }
}

impl From<actix_web::error::QueryPayloadError> for ApiError {
    fn from(e: actix_web::error::QueryPayloadError) -> Self {
        Self::bad_query("(query string)", e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // A conflict that reaches the API means the service gave up retrying under
            // contention: nothing was written, and the client may simply try again.
            StoreError::Unavailable(_) | StoreError::Conflict(_) => {
                tracing::warn!(error = %e.chain(), "store unavailable");
                Self::new(ErrorCode::StoreUnavailable, e.to_string())
            }
            StoreError::OutcomeUnknown(_) => {
                tracing::warn!(error = %e.chain(), "commit outcome unknown");
                Self::new(
                    ErrorCode::CommitOutcomeUnknown,
                    format!(
                        "{e}; the event may be stored or not: send it again with the same \
                         event id (a stored one is answered 200, a missing one is stored)"
                    ),
                )
            }
            StoreError::Corrupt(_) | StoreError::Other(_) => {
                // The text may describe internals; log it, answer generically.
                tracing::error!(error = %e.chain(), "store failure");
                Self::new(ErrorCode::Internal, "the store failed; see the server log")
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(violations) => {
                let message = match violations.total() {
                    1 => format!("1 problem: {}", violations[0].message),
                    n => format!("{n} problems, see details"),
                };
                Self::new(ErrorCode::ValidationFailed, message).with_details(violations.into_vec())
            }
            IngestError::Forbidden(_) => Self::new(ErrorCode::ForbiddenSource, e.to_string()),
            IngestError::EventIdReused(..) => {
                Self::new(ErrorCode::EventIdReused, e.to_string()).with_details(vec![
                    Violation::new("/headers/id", "already used with a different value"),
                ])
            }
            IngestError::IdentityConflict { ref products } => {
                let details = products
                    .iter()
                    .map(|p| Violation::new("/value", format!("matches product {p}")))
                    .collect();
                Self::new(ErrorCode::IdentityConflict, e.to_string()).with_details(details)
            }
            IngestError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_upper_snake() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            let code = c.code();
            assert!(seen.insert(code), "duplicate {code}");
            assert!(
                code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code}"
            );
            assert!(!c.reason().is_empty());
        }
    }

    #[test]
    fn only_server_side_codes_are_5xx() {
        for c in ErrorCode::ALL {
            let server = matches!(
                c,
                ErrorCode::StoreUnavailable
                    | ErrorCode::CommitOutcomeUnknown
                    | ErrorCode::Internal
                    | ErrorCode::ServerBusy
            );
            assert_eq!(c.status().is_server_error(), server, "{c}");
        }
    }

    #[test]
    fn tmf_body_is_the_oas_error_with_the_same_code_and_details() {
        let e = ApiError::new(ErrorCode::PatchTestFailed, "test failed")
            .with_details(vec![Violation::new("/1", "operation 1 failed")]);
        let b = e.tmf_body();
        assert_eq!(b["@type"], "Error");
        assert_eq!(b["code"], "PATCH_TEST_FAILED");
        assert_eq!(b["status"], "409");
        assert_eq!(b["reason"], ErrorCode::PatchTestFailed.reason());
        assert_eq!(b["message"], "test failed");
        assert_eq!(b["details"][0]["pointer"], "/1");
    }

    #[test]
    fn body_has_the_contract_shape() {
        let e = ApiError::new(ErrorCode::ValidationFailed, "bad")
            .with_details(vec![Violation::new("/value/status", "required")]);
        let b = e.body();
        assert_eq!(b["status"], 400);
        assert!(b["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(b["error"]["@type"], "Error");
        assert_eq!(b["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(b["error"]["message"], "bad");
        assert_eq!(b["error"]["details"][0]["pointer"], "/value/status");
        assert_eq!(b["error"]["details"][0]["message"], "required");
    }

    #[test]
    fn store_unavailable_is_503_with_retry_after() {
        let e: ApiError = StoreError::unavailable("down").into();
        let res = e.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn unknown_commit_outcome_is_503_with_retry_after_and_its_own_code() {
        let e: ApiError = StoreError::outcome_unknown("no answer").into();
        assert_eq!(e.code.code(), "COMMIT_OUTCOME_UNKNOWN");
        assert!(e.message.contains("same event id"), "{}", e.message);
        let res = e.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn corrupt_store_is_internal_without_leaking_text() {
        let e: ApiError = StoreError::corrupt("secret table xyz").into();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("xyz"));
    }

    #[test]
    fn ingest_errors_map_to_their_codes() {
        use crate::core::{EventId, PinvId, Source};
        let src = Source::parse("billing").unwrap();
        let cases: Vec<(IngestError, ErrorCode)> = vec![
            (
                IngestError::Invalid(vec![Violation::new("/headers/id", "required")].into()),
                ErrorCode::ValidationFailed,
            ),
            (
                IngestError::Forbidden(src.clone()),
                ErrorCode::ForbiddenSource,
            ),
            (
                IngestError::EventIdReused(src, EventId::parse("e1").unwrap()),
                ErrorCode::EventIdReused,
            ),
            (
                IngestError::IdentityConflict {
                    products: vec![PinvId::new_v4(), PinvId::new_v4()],
                },
                ErrorCode::IdentityConflict,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(ApiError::from(e).code, code);
        }
    }

    #[test]
    fn identity_conflict_names_every_product() {
        let (a, b) = (crate::core::PinvId::new_v4(), crate::core::PinvId::new_v4());
        let e = ApiError::from(IngestError::IdentityConflict {
            products: vec![a, b],
        });
        assert!(e.message.contains(&a.to_string()) && e.message.contains(&b.to_string()));
        assert_eq!(e.details.len(), 2);
    }

    #[test]
    fn www_authenticate_description_cannot_break_the_header() {
        let e = ApiError::unauthorized("bad \"token\"\n");
        let v = e.www_authenticate.unwrap();
        assert_eq!(
            v,
            r#"Bearer realm="pinv", error="invalid_token", error_description="bad token""#
        );
    }
}
