//! `GET /openapi.json`: the hand-written OpenAPI 3.1 document of this API.
//!
//! A unit test checks that it documents exactly the routes of [`crate::api::ROUTES`].

use actix_web::HttpResponse;
use serde_json::{json, Value};

use crate::api::error::ErrorCode;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    })
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": "PINV id (UUID)",
           "schema": {"type": "string", "format": "uuid"}})
}

fn package_param() -> Value {
    json!({"name": "as-adi-package", "in": "query", "required": false,
           "description": "Also return every other part of the ADI package; \
                           given without a value (`?as-adi-package` or `?as-adi-package=`) it is true",
           "allowEmptyValue": true,
           "schema": {"type": "boolean", "default": false}})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    let secured = json!([{"bearer": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "PINV product-inventory merge store",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sources POST partial TMF637 products in a CloudEvents-style envelope; PINV merges them into one golden document per product.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "One Authorization header. Claim `sources` lists the sources the token may write for; `*` is every source. Claim `pinv_admin: true` allows the /admin routes. `exp` is required; `exp` and `nbf` (NumericDates, fractions allowed) are checked with a clock-skew leeway (PINV_JWT_LEEWAY_SECONDS, 60 s by default); `iss` and `aud` (a string or an array) when configured; `alg: none` is never accepted."}},
            "schemas": {
                "Product": {"$ref": "/schema/AttProduct_tmf637.schema.json"},
                "Envelope": {"type": "object", "required": ["headers", "value"],
                    "properties": {
                        "headers": {"type": "object", "required": ["id", "source", "type", "time", "datacontenttype"],
                            "properties": {
                                "id": {"type": "string"}, "source": {"type": "string"}, "type": {"type": "string"},
                                "time": {"type": "string", "description": "RFC 3339 with an offset, a space instead of T allowed; the instant in UTC must fall in years 0000-9999"},
                                "datacontenttype": {"const": "application/json"}, "version": {"type": "string"},
                                "traceparent": {"type": "string"}, "tracestate": {"type": "string"}}},
                        "value": {"oneOf": [{"$ref": "#/components/schemas/Product"},
                            {"type": "array", "minItems": 3, "maxItems": 4, "items": {"$ref": "#/components/schemas/Product"}}]}}},
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
                        "patch": {"type": "array", "description": "RFC 6902 operations", "items": {"type": "object"}}}},
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
                        "201": {"description": "Stored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PostResponse"}}}},
                        "200": {"description": "Nothing stored (repeated or stale event); current documents", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PostResponse"}}}},
                        "400": error_response("Malformed JSON, envelope or schema violation, a posted externalIdentifier, an identity limit exceeded (ids over 256 bytes, over 100 identity keys per product), bad query"),
                        "401": error_response("Missing or invalid token"),
                        "403": error_response("The token may not write for the source"),
                        "409": error_response("Event id reused with another value, or identity conflict"),
                        "408": error_response("The body did not arrive within the body timeout"),
                        "413": error_response("Body over the limit"),
                        "415": error_response("Not application/json"),
                        "503": error_response("STORE_UNAVAILABLE (nothing was written), COMMIT_OUTCOME_UNKNOWN (send the same event again) or SERVER_BUSY (too many large bodies at once); see Retry-After")
                    }
                },
                "get": {
                    "summary": "List merged products; any other query parameter is an equality filter on a dotted path",
                    "security": secured,
                    "parameters": [
                        {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated attributes to keep"},
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "default": 0}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}
                    ],
                    "responses": {
                        "200": {"description": "Matching documents",
                            "headers": {"X-Total-Count": {"schema": {"type": "integer"}}, "X-Result-Count": {"schema": {"type": "integer"}}},
                            "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}}}}},
                        "400": error_response("Bad query"),
                        "401": error_response("Missing or invalid token")
                    }
                }
            },
            "/products/{id}": {
                "get": {
                    "summary": "One merged product, or its whole package",
                    "security": secured,
                    "parameters": [id_param(), package_param()],
                    "responses": {
                        "200": {"description": "The product, or with as-adi-package=true the package (requested product first)",
                            "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Product"}, {"$ref": "#/components/schemas/PackageResponse"}]}}}},
                        "401": error_response("Missing or invalid token"),
                        "404": error_response("Unknown product")
                    }
                }
            },
            "/products/{id}/sources": {
                "get": {
                    "summary": "Every source's kept contribution",
                    "security": secured,
                    "parameters": [id_param()],
                    "responses": {
                        "200": {"description": "Contributions", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Contribution"}}}}},
                        "401": error_response("Missing or invalid token"),
                        "404": error_response("Unknown product")
                    }
                }
            },
            "/products/{id}/history": {
                "get": {
                    "summary": "Changes of the merged document, oldest first",
                    "security": secured,
                    "parameters": [id_param()],
                    "responses": {
                        "200": {"description": "History", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}}}}},
                        "401": error_response("Missing or invalid token"),
                        "404": error_response("Unknown product")
                    }
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
                        "400": error_response("Malformed JSON or invalid body"),
                        "401": error_response("Missing or invalid token"),
                        "403": error_response("ADMIN_REQUIRED: the token lacks \"pinv_admin\": true"),
                        "409": error_response("REMERGE_RUNNING (a run is still running) or RULES_HASH_MISMATCH (the server's loaded rules are not the expected ones)"),
                        "415": error_response("Not application/json")
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
                        "401": error_response("Missing or invalid token"),
                        "403": error_response("ADMIN_REQUIRED: the token lacks \"pinv_admin\": true"),
                        "404": error_response("Unknown run (or forgotten by a restart)")
                    }
                }
            },
            "/schema/{file}": {
                "get": {
                    "summary": "A bundled JSON Schema file",
                    "parameters": [{"name": "file", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The schema", "content": {"application/schema+json": {}}},
                        "404": error_response("No such file")
                    }
                }
            },
            "/health/live": {"get": {"summary": "The process answers", "responses": {"200": {"description": "Live"}}}},
            "/health/ready": {"get": {"summary": "The store answers", "responses": {
                "200": {"description": "Ready"}, "503": error_response("Store unavailable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text format", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        }
    })
}

/// `GET /openapi.json`.
pub async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    // That the document lists exactly the registered routes is checked once, over HTTP:
    // tests/api/openapi.rs.

    #[test]
    fn products_and_admin_routes_require_the_bearer_scheme() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let secured = op.get("security").is_some();
                let needs_token = path.starts_with("/products") || path.starts_with("/admin/");
                assert_eq!(secured, needs_token, "{method} {path}");
            }
        }
    }
}
