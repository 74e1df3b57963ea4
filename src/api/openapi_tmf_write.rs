//! The OpenAPI description of the TMF637 writes ([`crate::api::tmf_write`]), added to the
//! document of [`crate::api::openapi`].

use serde_json::{json, Value};

use crate::api::error::ErrorCode;
use crate::api::openapi::{id_param, with};
use crate::api::tmf_write::{IDEMPOTENCY_KEY, JSON_PATCH, MERGE_PATCH, SOURCE_HEADER};

/// An error answer of the TMF surface (OAS `Error` shape).
fn tmf_error(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TmfError"}}}})
}

/// An error answer of PINV's own surface.
fn pinv_error(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}})
}

/// The answers every TMF write can give besides its own; `error` renders each.
fn common(error: fn(&str) -> Value) -> Value {
    let mut unauthorized = error("Missing or invalid token (UNAUTHORIZED)");
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}});
    let mut not_allowed = error("The path does not take this method (METHOD_NOT_ALLOWED)");
    not_allowed["headers"] = json!({"Allow": {"$ref": "#/components/headers/Allow"}});
    let mut unavailable = error(
        "STORE_UNAVAILABLE (nothing was written), COMMIT_OUTCOME_UNKNOWN (send the same \
         request again with the same Idempotency-Key) or SERVER_BUSY; see Retry-After",
    );
    unavailable["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}});
    json!({
        "401": unauthorized,
        "403": error("The token may not write for the source (FORBIDDEN_SOURCE)"),
        "404": error("Unknown product, or no contribution of the source to it (NOT_FOUND)"),
        "405": not_allowed,
        "500": error("A bug or an unexpected store failure (INTERNAL)"),
        "503": unavailable,
    })
}

fn source_header() -> Value {
    json!({"name": SOURCE_HEADER, "in": "header", "required": false,
           "description": "The writing source; required when the token may write for several sources (or `*`), and the token must be allowed to write for it",
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}})
}

fn idempotency_key() -> Value {
    json!({"name": IDEMPOTENCY_KEY, "in": "header", "required": false,
           "description": "The event id (else a new UUID): the same key with the same body again is answered 200 with the current product; with another body 409 EVENT_ID_REUSED",
           "schema": {"type": "string", "minLength": 1, "maxLength": 256}})
}

fn product_answer(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}})
}

/// Adds the TMF write schemas and paths to `doc`.
pub fn add_to(doc: &mut Value) {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    doc["components"]["schemas"]["TmfError"] = json!({
        "type": "object", "required": ["@type", "code", "reason", "message", "status"],
        "description": "TMF630/TMF637 Error, with PINV's stable code as `code` and located `details`",
        "properties": {"@type": {"const": "Error"}, "code": {"enum": codes},
            "reason": {"type": "string"}, "message": {"type": "string"},
            "status": {"type": "string", "pattern": "^[1-5][0-9][0-9]$"},
            "details": {"type": "array", "maxItems": 101, "items": {"type": "object",
                "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}}}}}});
    doc["components"]["schemas"]["JsonPatch"] = json!({
        "type": "array", "description": "RFC 6902 operations",
        "items": {"type": "object", "required": ["op", "path"],
            "properties": {"op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}}});
    let paths = &mut doc["paths"];
    // Links let a client (and schemathesis' stateful phase) follow a created product.
    let id_of_created = json!({"id": "$response.body#/id"});
    paths["/tmf-api/productInventory/v5/product"]["post"] = json!({
        "operationId": "createProduct",
        "summary": "Store a bare TMF637 product as the writing source's contribution (validated, identified, merged, history kept)",
        "security": [{"bearer": []}],
        "parameters": [source_header(), idempotency_key()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}},
        "responses": with(common(tmf_error), json!({
            "201": {"description": "Stored; the merged product",
                "links": {
                    "PatchProduct": {"operationId": "patchProduct", "parameters": id_of_created},
                    "DeleteProduct": {"operationId": "deleteProduct", "parameters": id_of_created}},
                "headers": {"Location": {"schema": {"type": "string"}, "description": "/tmf-api/productInventory/v5/product/{id}"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}},
            "200": product_answer("Same Idempotency-Key and body again, or an older event: nothing stored; the current product"),
            "400": tmf_error("Malformed JSON (MALFORMED_JSON), schema or identity rule broken (VALIDATION_FAILED), a bad PINV-Source or Idempotency-Key (BAD_HEADER), a bad query (BAD_QUERY)"),
            "408": tmf_error("The body did not arrive in time (REQUEST_TIMEOUT)"),
            "409": tmf_error("Idempotency-Key reused with another body (EVENT_ID_REUSED), or the product matches several stored products (IDENTITY_CONFLICT)"),
            "413": tmf_error("Body over the limit (PAYLOAD_TOO_LARGE)"),
            "415": tmf_error("Not application/json (UNSUPPORTED_MEDIA_TYPE)"),
        }))
    });
    let by_id = &mut paths["/tmf-api/productInventory/v5/product/{id}"];
    by_id["patch"] = json!({
            "operationId": "patchProduct",
            "summary": "Change the writing source's own contribution (a source without one starts from {}); validated like a POST, merged, history kept",
            "security": [{"bearer": []}],
            "parameters": [id_param(), source_header(), idempotency_key()],
            "requestBody": {"required": true, "content": {
                MERGE_PATCH: {"schema": {"type": "object", "description": "RFC 7386 merge patch"}},
                JSON_PATCH: {"schema": {"$ref": "#/components/schemas/JsonPatch"}}}},
            "responses": with(common(tmf_error), json!({
                "200": product_answer("The merged product"),
                "400": tmf_error("Malformed JSON (MALFORMED_JSON), the patched contribution breaks a rule (VALIDATION_FAILED), a patch that is not one or cannot be applied (PATCH_INVALID, pointer to the operation), a bad header (BAD_HEADER), a bad query (BAD_QUERY)"),
                "408": tmf_error("The body did not arrive in time (REQUEST_TIMEOUT)"),
                "409": tmf_error("A test operation failed (PATCH_TEST_FAILED, pointer to the operation), Idempotency-Key reused (EVENT_ID_REUSED), or IDENTITY_CONFLICT"),
                "413": tmf_error("Body over the limit (PAYLOAD_TOO_LARGE)"),
                "415": tmf_error("Neither application/merge-patch+json nor application/json-patch+json (UNSUPPORTED_MEDIA_TYPE)"),
            }))
    });
    by_id["delete"] = json!({
            "operationId": "deleteProduct",
            "summary": "Retract the writing source's contribution (its local-id key is freed; the product is merged again, or deleted with the last contribution); a pinv_admin token deletes the whole product",
            "security": [{"bearer": []}],
            "parameters": [id_param(), source_header()],
            "responses": with(common(tmf_error), json!({
                "204": {"description": "Retracted or deleted"},
                "400": tmf_error("A bad PINV-Source (BAD_HEADER), a bad query (BAD_QUERY)"),
            }))
    });
    paths["/products/{id}/sources/{source}"]["delete"] = json!({
        "summary": "Retract one source's contribution (its local-id key is freed; the product is merged again, or deleted with the last contribution)",
        "security": [{"bearer": []}],
        "parameters": [id_param(),
            {"name": "source", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": with(common(pinv_error), json!({
            "204": {"description": "Retracted"},
            "400": pinv_error("A bad query (BAD_QUERY)"),
        }))
    });
    // Every answer under the TMF base path, the reads' included, has the TMF error shape.
    for (path, item) in paths.as_object_mut().into_iter().flatten() {
        if path.starts_with("/tmf-api/") {
            use_tmf_errors(item);
        }
    }
}

/// Points every error schema below `value` at the TMF `Error` shape.
fn use_tmf_errors(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("$ref").and_then(Value::as_str) == Some("#/components/schemas/ErrorResponse")
            {
                map.insert("$ref".into(), json!("#/components/schemas/TmfError"));
            }
            map.values_mut().for_each(use_tmf_errors);
        }
        Value::Array(items) => items.iter_mut().for_each(use_tmf_errors),
        _ => {}
    }
}
