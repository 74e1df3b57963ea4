//! `GET /metrics`: Prometheus counters and histograms of this process.
//!
//! Each [`Metrics`] has its own registry, so several apps in one test process do not share
//! (or fight over) global metrics.

use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::api::error::{ApiError, ErrorCode};

/// The label of requests that matched no route (raw paths would explode cardinality).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The label of requests whose method is not one of the standard ones: a client may send
/// any token as a method, and one time series per made-up method would grow without bound.
pub const OTHER_METHOD: &str = "OTHER";

/// The `method` label: the method itself when it is a standard one, else [`OTHER_METHOD`].
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or(OTHER_METHOD)
}

/// The metrics PINV records.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    posts: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with PINV's metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("pinv_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )
        .expect("valid metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pinv_http_request_duration_seconds",
                "Time from request to response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route", "status"],
        )
        .expect("valid metric definition");
        let posts = IntCounterVec::new(
            Opts::new(
                "pinv_post_outcomes_total",
                "POST /products outcomes: created, unchanged, or error with its code",
            ),
            &["outcome", "code"],
        )
        .expect("valid metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(posts.clone()),
        ] {
            registry
                .register(c)
                .expect("metric names are distinct within a fresh registry");
        }
        Self {
            registry,
            requests,
            latency,
            posts,
        }
    }

    /// Records one answered request. Every label has a bounded set of values: the method
    /// goes through [`method_label`], the route is a pattern or [`UNMATCHED_ROUTE`], and
    /// the status is a three-digit number.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method_label(method), route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// Records the outcome of a `POST /products`: `created`, `unchanged`, or `error` with
    /// the error code (empty for successes).
    pub fn observe_post(&self, outcome: &str, code: &str) {
        self.posts.with_label_values(&[outcome, code]).inc();
    }

    /// Adds metrics kept elsewhere (the hub dispatcher's) to what [`render`](Self::render)
    /// shows.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metrics: cannot register a collector");
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Result<String, String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| e.to_string())?;
        String::from_utf8(buf).map_err(|e| e.to_string())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`.
pub async fn get_metrics(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics.render().map_err(|e| {
        tracing::error!(error = %e, "cannot render metrics");
        ApiError::new(ErrorCode::Internal, "cannot render metrics")
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_requests_and_posts_are_rendered_with_labels() {
        let m = Metrics::new();
        m.observe_request("GET", "/products/{id}", 200, 0.003);
        m.observe_post("error", "VALIDATION_FAILED");
        let text = m.render().unwrap();
        assert!(text.contains(
            r#"pinv_http_requests_total{method="GET",route="/products/{id}",status="200"} 1"#
        ));
        assert!(text.contains("pinv_http_request_duration_seconds_bucket"));
        assert!(text
            .contains(r#"pinv_post_outcomes_total{code="VALIDATION_FAILED",outcome="error"} 1"#));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::new();
        for i in 0..1000 {
            m.observe_request(&format!("M{i}"), UNMATCHED_ROUTE, 404, 0.001);
        }
        m.observe_request("DELETE", UNMATCHED_ROUTE, 404, 0.001);
        let text = m.render().unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("pinv_http_requests_total{"))
            .collect::<Vec<_>>();
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(text.contains(
            r#"pinv_http_requests_total{method="OTHER",route="unmatched",status="404"} 1000"#
        ));
        assert!(!text.contains("M999"));
    }
}
