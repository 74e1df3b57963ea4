//! `GET /openapi.json`: the hand-written OpenAPI 3.1 document of this API.
//!
//! A unit test checks that it documents exactly the routes of [`crate::api::ROUTES`].

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use crate::api::error::{ErrorCode, RETRY_AFTER_SECONDS};
use crate::api::reads::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::app::service::Service;
use crate::core::envelope::PACKAGE_SIZE;
use crate::core::schema;

/// An error answer; `headers` are the response headers it carries.
fn error_response(description: &str, headers: Value) -> Value {
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    })
}

fn unauthorized() -> Value {
    error_response(
        "Missing or invalid token (UNAUTHORIZED)",
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}}),
    )
}

fn method_not_allowed() -> Value {
    error_response(
        "The path does not take this method (METHOD_NOT_ALLOWED)",
        json!({"Allow": {"$ref": "#/components/headers/Allow"}}),
    )
}

fn unavailable(description: &str) -> Value {
    error_response(
        description,
        json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}}),
    )
}

fn admin_required() -> Value {
    error_response(
        "The token lacks \"pinv_admin\": true (ADMIN_REQUIRED)",
        json!({}),
    )
}

fn internal() -> Value {
    error_response("A bug or an unexpected store failure (INTERNAL)", json!({}))
}

/// The error answers every `/products` read can give besides its own.
fn read_errors() -> Value {
    json!({
        "400": error_response("Bad query (BAD_QUERY)", json!({})),
        "401": unauthorized(),
        "405": method_not_allowed(),
        "500": internal(),
        "503": unavailable("The store is unavailable (STORE_UNAVAILABLE); see Retry-After"),
    })
}

/// `GET /products/{id}/provenance` (its own function: one `json!` of the whole document
/// would pass the macro recursion limit).
fn provenance_path(secured: &Value) -> Value {
    json!({
        "get": {
            "summary": "Where every leaf of the merged document came from: source, event, time and deciding rule; PINV's own values say so",
            "security": secured,
            "parameters": [id_param(), {"name": "at", "in": "query", "required": false,
                "description": "Explain this earlier revision (from the history); 400 REVISION_NOT_EXPLAINABLE when it cannot be reproduced exactly",
                "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}],
            "responses": with(read_errors(), json!({
                "200": {"description": "Provenance", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Provenance"}}}},
                "400": error_response("Bad query (BAD_QUERY), or a revision that cannot be explained exactly (REVISION_NOT_EXPLAINABLE; the message says why)", json!({})),
                "404": error_response("Unknown product, or a revision it never had (NOT_FOUND)", json!({}))
            }))
        }
    })
}

/// The answer of `GET /products/{id}/provenance`.
fn provenance_schema() -> Value {
    json!({"type": "object", "required": ["id", "revision", "currentRevision", "rulesHash", "leaves", "elements"],
                    "properties": {"id": {"type": "string"}, "revision": {"type": "integer"}, "currentRevision": {"type": "integer"},
                        "rulesHash": {"type": "string"},
                        "leaves": {"type": "array", "items": {"type": "object", "required": ["pointer", "value", "setBy"],
                            "properties": {"pointer": {"type": "string", "description": "JSON pointer into the merged document"},
                                "value": {}, "setBy": {"enum": ["source", "pinv"]},
                                "source": {"type": "string"}, "eventId": {"type": "string"}, "time": {"type": "string", "format": "date-time"},
                                "rule": {"type": "object", "properties": {"path": {"type": ["string", "null"]}, "strategy": {"type": "string"},
                                    "elementStrategy": {"type": "string"}, "precedence": {"type": "array", "items": {"type": "string"}}}},
                                "reason": {"type": "string"}}}},
                        "elements": {"type": "array", "items": {"type": "object", "required": ["pointer", "sources"],
                            "properties": {"pointer": {"type": "string"}, "key": {"type": "object"},
                                "sources": {"type": "array", "items": {"type": "string"}}}}}}})
}

/// `responses` with `extra` added to `base`.
pub(crate) fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

pub(crate) fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true,
           "description": "PINV id (UUID); anything else is an unknown product (404)",
           "schema": {"type": "string"}})
}

fn package_param() -> Value {
    json!({"name": "as-adi-package", "in": "query", "required": false,
           "description": "Also return every other part of the ADI package; \
                           given without a value (`?as-adi-package` or `?as-adi-package=`) it is true",
           "allowEmptyValue": true,
           "schema": {"type": "string", "enum": ["true", "false", ""], "default": "false"}})
}

/// The envelope schema file as served at `/schema/envelope.schema.json`, embedded (so the
/// document is self-contained) without the keywords that only make sense at a file's root.
fn envelope_schema() -> Value {
    let text = schema::file(schema::ENVELOPE_FILE).expect("the envelope schema is bundled");
    let mut envelope: Value = serde_json::from_str(text).expect("the envelope schema is JSON");
    if let Some(root) = envelope.as_object_mut() {
        root.remove("$schema");
        root.remove("$id");
    }
    envelope
}

/// `fields=`: at least one name once split at commas and trimmed; the class is the
/// whitespace `str::trim` removes (Rust's, which differs from a regex's `\s`).
/// How the list routes read their query string.
const LIST_DESCRIPTION: &str = "Every query parameter other than fields, sort, offset and limit is a filter on a \
dotted attribute path (arrays transparent): `path=v` (comma: any of), `path.ne=v` or `path!=v` (no value equal; \
an absent path matches), `path.gt`, `.gte`, `.lt`, `.lte` or `path>v`, `>=`, `<`, `<=`. Values compare in the \
document value's kind: numbers as numbers, dates (RFC 3339 date-times, YYYY-MM-DD dates) as instants, other \
strings as strings, true/false as booleans. An unknown operator or unreadable parameter is 400 BAD_QUERY \
naming it.";

fn fields_param() -> Value {
    json!({"name": "fields", "in": "query",
        "description": "Comma-separated dotted paths to keep (into objects and arrays); id, href and @type are always kept",
        "schema": {"type": "string", "pattern": FIELDS_PATTERN}})
}

/// The answers of both list routes.
fn list_responses() -> Value {
    with(
        read_errors(),
        json!({
            "200": {"description": "Matching documents",
                "headers": {
                    "X-Total-Count": {"description": "Documents matching the filters", "required": true, "schema": {"type": "integer", "minimum": 0}},
                    "X-Result-Count": {"description": "Documents in this page", "required": true, "schema": {"type": "integer", "minimum": 0}}},
                "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}
        }),
    )
}

/// The named parameters of the list routes (filters are any other name).
fn list_params() -> Value {
    json!([
        fields_param(),
        {"name": "sort", "in": "query",
         "description": "Comma-separated dotted paths, `-` before one for descending; stable, absent values last",
         "schema": {"type": "string", "pattern": SORT_PATTERN}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}
    ])
}

/// One dotted attribute path as the query language reads it (`core::query`): segments
/// without controls, whitespace, operator or bracket characters (nor `+` or a leading `-`,
/// which a sort key may carry as a prefix).
macro_rules! path_pattern {
    () => {
        r#"[^\x00-\x20\x7f-\x9f\s=<>!,~*()\[\]{}"'.+-][^\x00-\x20\x7f-\x9f\s=<>!,~*()\[\]{}"'.+]*(\.[^\x00-\x20\x7f-\x9f\s=<>!,~*()\[\]{}"'.+]+)*"#
    };
}
const FIELDS_PATTERN: &str = concat!("^", path_pattern!(), "(,", path_pattern!(), ")*$");
const SORT_PATTERN: &str = concat!("^-?", path_pattern!(), "(,-?", path_pattern!(), ")*$");

/// The OpenAPI document. `accepted_types` are the event types of the loaded merge rules
/// (`None` when the app runs without them: the envelope then says only "a non-empty string").
pub fn document(accepted_types: Option<&[String]>) -> Value {
    let mut types = json!({});
    if let Some(accepted) = accepted_types {
        types = json!({"enum": accepted});
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    let secured = json!([{"bearer": []}]);
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "PINV product-inventory merge store",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sources POST partial TMF637 products in a CloudEvents-style envelope; PINV merges them into one golden document per product.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "components": {
            "headers": {
                "WWW-Authenticate": {"description": "Why the token was refused (RFC 6750)", "schema": {"type": "string"}},
                "Allow": {"description": "The methods the path takes", "schema": {"type": "string"}},
                "traceparent": {"description": "The request's W3C traceparent header if valid, else the event's", "schema": {"type": "string"}},
                "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "const": RETRY_AFTER_SECONDS}}
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "One Authorization header. Claim `sources` lists the sources the token may write for; `*` is every source. Claim `pinv_admin: true` allows the /admin routes. `exp` is required; `exp` and `nbf` (NumericDates, fractions allowed) are checked with a clock-skew leeway (PINV_JWT_LEEWAY_SECONDS, 60 s by default); `iss` and `aud` (a string or an array) when configured; `alg: none` is never accepted."}},
            "schemas": {
                "Product": {"$ref": "/schema/AttProduct_tmf637.schema.json"},
                "Envelope": {"allOf": [
                    envelope_schema(),
                    {"properties": {
                        "headers": {"properties": {"type": types}},
                        "value": {"oneOf": [{"$ref": "#/components/schemas/Product"},
                            {"type": "array", "minItems": PACKAGE_SIZE.start(), "maxItems": PACKAGE_SIZE.end(),
                             "items": {"$ref": "#/components/schemas/Product"}}]}}}]},
                "PostResponse": {"type": "object", "required": ["status", "timestamp", "responseData"],
                    "properties": {"status": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                        "responseData": {"type": "array", "items": {"type": "object",
                            "properties": {"headers": {"type": "object"}, "value": {"$ref": "#/components/schemas/Product"}}}}}},
                "PackageResponse": {"type": "object", "required": ["status", "timestamp", "responseData"],
                    "properties": {"status": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                        "responseData": {"type": "array", "items": {"type": "object",
                            "properties": {"value": {"$ref": "#/components/schemas/Product"}}}}}},
                "Contribution": {"type": "object", "required": ["source", "eventId", "time", "receivedAt", "value"],
                    "properties": {"source": {"type": "string"}, "eventId": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"}, "receivedAt": {"type": "string", "format": "date-time"},
                        "value": {"$ref": "#/components/schemas/Product"}}},
                "HistoryEntry": {"type": "object", "required": ["revision", "time", "event", "rulesHash", "patch"],
                    "properties": {"revision": {"type": "integer"}, "time": {"type": "string", "format": "date-time"},
                        "event": {"type": "object", "properties": {"source": {"type": "string"}, "id": {"type": "string"}}},
                        "rulesHash": {"type": "string", "description": "Content hash of the merge rules that made this change"},
                        "patch": {"type": "array", "description": "RFC 6902 operations", "items": {"type": "object"}},
                        "deleted": {"const": true, "description": "Present on the last entry of a deleted product (its patch takes the document to {})"}}},
                "RemergeRequest": {"type": "object", "additionalProperties": false,
                    "properties": {
                        "dryRun": {"type": "boolean", "default": false, "description": "Count what would change; write nothing"},
                        "filter": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Only products matching every dotted path = value, as GET /products filters"},
                        "batch": {"type": "integer", "minimum": 1, "maximum": crate::api::admin::MAX_BATCH, "default": crate::api::admin::DEFAULT_BATCH},
                        "rulesHash": {"type": "string", "description": "Start only if the server's loaded rules have this hash (else 409 RULES_HASH_MISMATCH)"}}},
                "RemergeRun": {"type": "object", "required": ["id", "status", "dryRun", "filter", "rulesHash", "startedAt", "finishedAt", "progress", "summary", "error"],
                    "properties": {"id": {"type": "string"}, "status": {"enum": ["running", "finished", "failed"]},
                        "dryRun": {"type": "boolean"}, "filter": {"type": "object", "additionalProperties": {"type": "string"}},
                        "rulesHash": {"type": "string", "description": "Hash of the rules the server loaded at start, which the run applies"},
                        "startedAt": {"type": "string", "format": "date-time"}, "finishedAt": {"type": ["string", "null"], "format": "date-time"},
                        "progress": {"type": "object", "properties": {"read": {"type": "integer"}, "total": {"type": ["integer", "null"]}}},
                        "summary": {"type": "object", "description": "Totals so far; final once finished",
                            "properties": {"scanned": {"type": "integer"}, "changed": {"type": "integer"}, "unchanged": {"type": "integer"},
                                "conflictsRetried": {"type": "integer"}, "failed": {"type": "integer"},
                                "fields": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Per top-level attribute, in how many products it changed"}}},
                        "error": {"type": ["string", "null"]}}},
                "ErrorResponse": {"type": "object", "required": ["status", "timestamp", "error"],
                    "properties": {"status": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                        "error": {"type": "object", "required": ["@type", "code", "reason", "message", "details"],
                            "properties": {"@type": {"const": "Error"}, "code": {"enum": codes},
                                "reason": {"type": "string"}, "message": {"type": "string"},
                                "details": {"type": "array", "maxItems": 101, "description": "At most 100 problems; when there were more, a last entry says how many were not shown", "items": {"type": "object",
                                    "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}}}}}}}}
            }
        },
        "paths": {
            "/products": {
                "post": {
                    "summary": "Store one product or one ADI package and return the merged documents",
                    "security": secured,
                    "parameters": [package_param()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}},
                    "responses": {
                        "201": {"description": "Stored", "headers": {"traceparent": {"$ref": "#/components/headers/traceparent"}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PostResponse"}}}},
                        "200": {"description": "Nothing stored (repeated or stale event); current documents",
                            "headers": {"traceparent": {"$ref": "#/components/headers/traceparent"}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PostResponse"}}}},
                        "400": error_response("Malformed JSON (MALFORMED_JSON), envelope, schema, identity or package rule broken, a posted externalIdentifier, an identity limit exceeded: ids over 256 bytes, over 100 identity keys per product (VALIDATION_FAILED), bad query (BAD_QUERY)", json!({})),
                        "401": unauthorized(),
                        "403": error_response("The token may not write for the source (FORBIDDEN_SOURCE)", json!({})),
                        "405": method_not_allowed(),
                        "409": error_response("Event id reused with another value (EVENT_ID_REUSED), or the document matches several products (IDENTITY_CONFLICT)", json!({})),
                        "408": error_response("The body did not arrive within PINV_BODY_TIMEOUT_SECS (REQUEST_TIMEOUT)", json!({})),
                        "413": error_response("Body over the limit (PAYLOAD_TOO_LARGE)", json!({})),
                        "415": error_response("Not application/json with at most a UTF-8 charset (UNSUPPORTED_MEDIA_TYPE)", json!({})),
                        "500": internal(),
                        "503": unavailable("STORE_UNAVAILABLE (nothing was written), COMMIT_OUTCOME_UNKNOWN (send the same event again) or SERVER_BUSY (too many large bodies at once); see Retry-After")
                    }
                },
                "get": {
                    "summary": "List merged products (TMF630 filters, sort, fields, paging)",
                    "security": secured,
                    "description": LIST_DESCRIPTION,
                    "parameters": list_params(),
                    "responses": list_responses()
                }
            },
            "/products/{id}": {
                "get": {
                    "summary": "One merged product, or its whole package",
                    "security": secured,
                    "parameters": [id_param(), package_param()],
                    "responses": with(read_errors(), json!({
                        "200": {"description": "The product, or with as-adi-package=true the package (requested product first)",
                            "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Product"}, {"$ref": "#/components/schemas/PackageResponse"}]}}}},
                        "404": error_response("Unknown product (NOT_FOUND)", json!({}))
                    }))
                }
            },
            "/tmf-api/productInventory/v5/product": {
                "get": {
                    "summary": "TMF637: list merged products, as GET /products, with absolute href",
                    "description": LIST_DESCRIPTION,
                    "security": secured,
                    "parameters": list_params(),
                    "responses": list_responses()
                }
            },
            "/tmf-api/productInventory/v5/product/{id}": {
                "get": {
                    "summary": "TMF637: one merged product, as GET /products/{id}, with absolute href",
                    "security": secured,
                    "parameters": [id_param(), fields_param()],
                    "responses": with(read_errors(), json!({
                        "200": {"description": "The product (projected with fields)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}},
                        "404": error_response("Unknown product (NOT_FOUND)", json!({}))
                    }))
                }
            },
            "/products/{id}/sources": {
                "get": {
                    "summary": "Every source's kept contribution",
                    "security": secured,
                    "parameters": [id_param()],
                    "responses": with(read_errors(), json!({
                        "200": {"description": "Contributions", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Contribution"}}}}},
                        "404": error_response("Unknown product (NOT_FOUND)", json!({}))
                    }))
                }
            },
            "/products/{id}/history": {
                "get": {
                    "summary": "Changes of the merged document, oldest first",
                    "security": secured,
                    "parameters": [id_param()],
                    "responses": with(read_errors(), json!({
                        "200": {"description": "History (kept after the product is deleted)", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}}}}},
                        "404": error_response("Unknown product (NOT_FOUND)", json!({}))
                    }))
                }
            },
            "/admin/remerge": {
                "post": {
                    "summary": "Start a re-merge of the stored products with the rules the server loaded at start (admin token); one run at a time",
                    "security": secured,
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemergeRequest"}}}},
                    "responses": {
                        "202": {"description": "Started; follow it at Location",
                            "headers": {"Location": {"schema": {"type": "string"}, "description": "/admin/remerge/{id}"}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemergeRun"}}}},
                        "400": error_response("Malformed JSON (MALFORMED_JSON) or an invalid body (VALIDATION_FAILED)", json!({})),
                        "401": unauthorized(),
                        "403": admin_required(),
                        "405": method_not_allowed(),
                        "409": error_response("REMERGE_RUNNING (a run is still running) or RULES_HASH_MISMATCH (the server's loaded rules are not the expected ones)", json!({})),
                        "413": error_response("Body over the limit (PAYLOAD_TOO_LARGE)", json!({})),
                        "415": error_response("Not application/json (UNSUPPORTED_MEDIA_TYPE)", json!({})),
                        "500": internal()
                    }
                }
            },
            "/admin/remerge/{id}": {
                "get": {
                    "summary": "A re-merge run: progress while running, the summary once finished (runs are kept in memory; a restart forgets them)",
                    "security": secured,
                    "parameters": [{"name": "id", "in": "path", "required": true, "description": "Run id", "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The run", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RemergeRun"}}}},
                        "401": unauthorized(),
                        "403": admin_required(),
                        "404": error_response("Unknown run, or forgotten by a restart (NOT_FOUND)", json!({})),
                        "405": method_not_allowed(),
                        "500": internal()
                    }
                }
            },
            "/schema/{file}": {
                "get": {
                    "summary": "A bundled JSON Schema file",
                    "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The schema", "content": {"application/schema+json": {"schema": {"type": "object"}}}},
                        "404": error_response("No such file (NOT_FOUND)", json!({})),
                        "405": method_not_allowed()
                    }
                }
            },
            "/health/live": {"get": {"summary": "The process answers", "responses": {
                "200": {"description": "Live"}, "405": method_not_allowed()}}},
            "/health/ready": {"get": {"summary": "The store answers", "responses": {
                "200": {"description": "Ready"}, "405": method_not_allowed(),
                "503": unavailable("Store unavailable (STORE_UNAVAILABLE)")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "405": method_not_allowed()}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                "405": method_not_allowed()}}}
        }
    });
    add_adapters(&mut doc, &secured);
    hub_paths(&mut doc, &secured);
    // Added after: more entries inside the one `json!` pass the macro recursion limit.
    doc["paths"]["/products/{id}/provenance"] = provenance_path(&secured);
    doc["paths"]["/tmf-api/productInventory/v5/product/{id}/provenance"] =
        provenance_path(&secured);
    doc["components"]["schemas"]["Provenance"] = provenance_schema();
    crate::api::openapi_tmf_write::add_to(&mut doc);
    doc
}

/// The hub's paths and schemas (`/tmf-api/productInventory/v5/hub`).
fn hub_paths(doc: &mut Value, secured: &Value) {
    let base = crate::api::hub::BASE;
    let hub = json!({"$ref": "#/components/schemas/Hub"});
    let id = json!({"name": "id", "in": "path", "required": true, "description": "Hub id", "schema": {"type": "string"}});
    doc["components"]["schemas"]["Hub"] = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "href": {"type": "string"}, "@type": {"const": "Hub"},
            "callback": {"type": "string"}, "query": {"type": "string"}, "signed": {"type": "boolean"},
            "deliveryStatus": {"type": "object", "properties": {
                "pendingCount": {"type": "integer"}, "deadCount": {"type": "integer"},
                "deliveredCount": {"type": "integer"},
                "overflowCount": {"type": "integer", "description": "Events given up undelivered (kept as dead) because more than PINV_HUB_OUTBOX_MAX waited"},
                "lastSuccess": {"type": ["string", "null"], "format": "date-time"},
                "lastError": {"type": ["string", "null"]},
                "lastErrorAt": {"type": ["string", "null"], "format": "date-time"}}}
        }
    });
    doc["paths"][base] = json!({"post": {
    "summary": "Subscribe a callback to product events (TMF637 hub)",
    "security": secured,
    "requestBody": {"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["callback"],
        "properties": {
            "callback": {"type": "string", "format": "uri",
                "description": "An http or https URL (with PINV_HUB_CALLBACK_ALLOW set, starting with one of its prefixes): the listener's base URL; events are POSTed to {callback}/listener/productCreateEvent etc. (TMF637 listener resources)"},
            "query": {"type": ["string", "null"],
                "description": "The list routes' query language over the event: eventType and event.product.* filters, e.g. eventType=ProductStateChangeEvent&event.product.status=suspended"},
            "secret": {"type": ["string", "null"], "description": "Key of the HMAC-SHA256 signature (X-PINV-Signature) of each delivery"}}}}}},
    "responses": {
        "201": {"description": "Subscribed", "headers": {"Location": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": hub}}},
        "400": error_response("BAD_CALLBACK, BAD_HUB_QUERY, MALFORMED_JSON or VALIDATION_FAILED", json!({})),
        "408": error_response("The body did not arrive in time (REQUEST_TIMEOUT)", json!({})),
        "413": error_response("Body over the limit (PAYLOAD_TOO_LARGE)", json!({})),
        "415": error_response("Not application/json (UNSUPPORTED_MEDIA_TYPE)", json!({})),
        "401": unauthorized(),
        "405": method_not_allowed(),
        "500": internal(),
        "503": unavailable("The store is unavailable (STORE_UNAVAILABLE); see Retry-After")
    }}});
    doc["paths"][format!("{base}/{{id}}")] = json!({
        "get": {"summary": "A subscription and its delivery status", "security": secured, "parameters": [id],
            "responses": {"200": {"description": "The hub", "content": {"application/json": {"schema": hub}}},
                "401": unauthorized(), "404": error_response("No such hub (NOT_FOUND)", json!({})),
                "405": method_not_allowed(), "500": internal()}},
        "delete": {"summary": "Unsubscribe", "security": secured, "parameters": [id],
            "responses": {"204": {"description": "Unsubscribed"},
                "401": unauthorized(), "404": error_response("No such hub (NOT_FOUND)", json!({})),
                "405": method_not_allowed(), "500": internal()}}
    });
}

/// `POST /adapters/{system}` and its answer's schema, added to the document apart (the
/// document's single `json!` is at the macro recursion limit).
fn add_adapters(doc: &mut Value, secured: &Value) {
    doc["paths"]["/adapters/{system}"] = json!({
        "post": {
            "summary": "Map a native payload of a system (activation, care-order...) with its adapter and store every product it holds: snapshots like POST /products, changes as merge patches of the system's own contribution",
                                "parameters": [{"name": "system", "in": "path", "required": true, "description": "The adapter: adapters/{system}.toml", "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"description": "The system's native payload; headers such as X-ATT-MessageId may give the event id"}}}},
            "responses": {
                "201": {"description": "At least one product stored; per product its outcome", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AdapterResponse"}}}},
                "200": {"description": "Nothing stored: every product was stored before (a redelivery); per product its outcome", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AdapterResponse"}}}},
                "400": error_response("Malformed JSON (MALFORMED_JSON), or the payload does not fit the mapping or a mapped product is invalid (VALIDATION_FAILED; pointers into the native payload)", json!({})),
                "401": unauthorized(),
                "403": error_response("The token may not write for the adapter's source (FORBIDDEN_SOURCE)", json!({})),
                "404": error_response("No adapter for the system, or (every product failing) a change for a line no product has (NOT_FOUND)", json!({})),
                "405": method_not_allowed(),
                "408": error_response("The body did not arrive within PINV_BODY_TIMEOUT_SECS (REQUEST_TIMEOUT)", json!({})),
                "409": error_response("Every product failed with EVENT_ID_REUSED or IDENTITY_CONFLICT", json!({})),
                "413": error_response("Body over the limit (PAYLOAD_TOO_LARGE)", json!({})),
                "415": error_response("Not application/json (UNSUPPORTED_MEDIA_TYPE)", json!({})),
                "500": internal(),
                "503": unavailable("STORE_UNAVAILABLE, COMMIT_OUTCOME_UNKNOWN or SERVER_BUSY; see Retry-After")
            }
        }
    });
    doc["paths"]["/adapters/{system}"]["post"]["security"] = secured.clone();
    doc["components"]["schemas"]["AdapterResponse"] = json!({"type": "object", "required": ["status", "timestamp", "system", "results"],
                    "properties": {"status": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                        "system": {"type": "string"},
                        "results": {"type": "array", "items": {"type": "object", "required": ["pointer", "eventId", "status"],
                            "properties": {"pointer": {"type": "string", "description": "The product's element in the native payload"},
                                "eventId": {"type": "string"}, "status": {"type": "integer", "description": "201 stored, 200 stored before, else the error's status"},
                                "id": {"type": "string", "description": "PINV id"}, "href": {"type": "string"},
                                "error": {"type": "object", "description": "As ErrorResponse.error, pointers into the native payload"}}}}}});
}

/// `GET /openapi.json`.
pub async fn get_openapi(service: Option<web::Data<Service>>) -> HttpResponse {
    let accepted = service.as_ref().map(|s| s.rules.accepted_types.as_slice());
    HttpResponse::Ok().json(document(accepted))
}

#[cfg(test)]
mod tests {
    use super::*;

    // That the document lists exactly the registered routes is checked once, over HTTP:
    // tests/api/openapi.rs.

    #[test]
    fn products_and_admin_routes_require_the_bearer_scheme() {
        let doc = document(None);
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let secured = op.get("security").is_some();
                let needs_token = path.starts_with("/products")
                    || path.starts_with("/admin/")
                    || path.starts_with("/tmf-api/")
                    || path.starts_with("/adapters/");
                assert_eq!(secured, needs_token, "{method} {path}");
            }
        }
    }
}
