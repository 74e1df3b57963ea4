//! `GET /health/live` and `GET /health/ready`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::api::error::ApiError;
use crate::app::service::Service;

/// The process answers: always `200`.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

/// `200` when the store answers a ping, else the store's error (`503` when unavailable).
pub async fn ready(service: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    service.store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
