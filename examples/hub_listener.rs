//! A hub subscriber for load tests (scripts/load/hub.sh): answers every event `204` and
//! records the time from the event's `eventTime` (set when PINV commits the change) to its
//! arrival. `GET /stats` gives `{"count", "p50_ms", "p99_ms", "max_ms"}`.
//!
//! Usage: `cargo run --release --example hub_listener -- <port>`

use std::sync::Mutex;

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[derive(Default)]
struct Latencies(Mutex<Vec<f64>>);

async fn event(body: web::Bytes, seen: web::Data<Latencies>) -> HttpResponse {
    let now = Utc::now();
    let sent = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["eventTime"].as_str().map(str::to_owned))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    if let Some(sent) = sent {
        let ms = (now - sent.with_timezone(&Utc))
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0;
        seen.0.lock().unwrap().push(ms);
    }
    HttpResponse::NoContent().finish()
}

async fn stats(seen: web::Data<Latencies>) -> HttpResponse {
    let mut all = seen.0.lock().unwrap().clone();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| {
        all.get(((all.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    HttpResponse::Ok().json(json!({
        "count": all.len(),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": all.last().copied().unwrap_or(0.0),
    }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: hub_listener <port>");
    let seen = web::Data::new(Latencies::default());
    HttpServer::new(move || {
        App::new()
            .app_data(seen.clone())
            .route("/stats", web::get().to(stats))
            .default_service(web::to(event))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
