//! The TMF637 hub: `POST`, `GET` and `DELETE /tmf-api/productInventory/v5/hub`.
//!
//! A subscription is stored; from then on every committed change writes its events to the
//! subscription's outbox in the change's own transaction, and the dispatcher
//! ([`crate::app::dispatch`]) delivers them.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::auth::Claims;
use crate::api::error::{ApiError, ErrorCode};
use crate::app::service::Service;
use crate::config::Settings;
use crate::core::event::HubQuery;
use crate::store::outbox::{DeliveryStatus, Subscription};

/// The hub's base path.
pub const BASE: &str = "/tmf-api/productInventory/v5/hub";

/// The body of `POST /hub` (TMF `Hub_FVO`, plus an optional signing secret).
#[derive(Debug, Deserialize)]
pub struct HubRequest {
    /// Where to POST events.
    pub callback: String,
    /// Which events (empty or absent: all).
    #[serde(default)]
    pub query: Option<String>,
    /// Key of the `X-PINV-Signature` HMAC-SHA256.
    #[serde(default)]
    pub secret: Option<String>,
}

/// Refuses a callback that is not `http`/`https` or outside `allow` (when it is set).
pub fn check_callback(callback: &str, allow: &[String]) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::new(ErrorCode::BadCallback, format!("callback: {why}"));
    let url = reqwest::Url::parse(callback).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("must be an http or https URL with a host"));
    }
    let allow: Vec<&String> = allow.iter().filter(|p| !p.is_empty()).collect();
    if !allow.is_empty() && !allow.iter().any(|p| callback.starts_with(p.as_str())) {
        return Err(bad(
            "does not start with any prefix of PINV_HUB_CALLBACK_ALLOW",
        ));
    }
    Ok(())
}

fn render(sub: &Subscription, pending: u64, dead: u64) -> Value {
    let DeliveryStatus {
        delivered,
        overflowed,
        last_success,
        last_error,
        last_error_at,
    } = &sub.status;
    json!({
        "id": sub.id,
        "href": format!("{BASE}/{}", sub.id),
        "@type": "Hub",
        "callback": sub.callback,
        "query": sub.query,
        "signed": sub.secret.is_some(),
        "deliveryStatus": {
            "pendingCount": pending,
            "deadCount": dead,
            "deliveredCount": delivered,
            "overflowCount": overflowed,
            "lastSuccess": last_success,
            "lastError": last_error,
            "lastErrorAt": last_error_at,
        },
    })
}

/// `POST /hub`: registers a subscription.
pub async fn post_hub(
    _claims: Claims,
    body: web::Json<HubRequest>,
    service: web::Data<Service>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_callback(&body.callback, &settings.hub.hub_callback_allow)?;
    let query = body.query.unwrap_or_default();
    HubQuery::parse(&query).map_err(|e| ApiError::new(ErrorCode::BadHubQuery, e.to_string()))?;
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        callback: body.callback,
        query,
        secret: body.secret.filter(|s| !s.is_empty()),
        created: chrono::Utc::now(),
        status: DeliveryStatus::default(),
    };
    service.store.put_subscription(&sub).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("{BASE}/{}", sub.id)))
        .json(render(&sub, 0, 0)))
}

async fn find(service: &Service, id: &str) -> Result<Subscription, ApiError> {
    service
        .store
        .subscriptions()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no hub with id '{id}'")))
}

/// `GET /hub/{id}`: the subscription and how delivery goes.
pub async fn get_hub(
    _claims: Claims,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let sub = find(&service, &id).await?;
    let counts = service.store.outbox_counts(&sub.id).await?;
    Ok(HttpResponse::Ok().json(render(&sub, counts.pending, counts.dead)))
}

/// `DELETE /hub/{id}`: stops delivery and forgets the subscription's outbox.
pub async fn delete_hub(
    _claims: Claims,
    id: web::Path<String>,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    if service.store.delete_subscription(&id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no hub with id '{id}'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_must_be_http_and_allowed() {
        assert!(check_callback("http://a:1/x", &[]).is_ok());
        assert!(check_callback("https://a/x", &[]).is_ok());
        for bad in ["ftp://a/x", "file:///etc/passwd", "not a url", "http://"] {
            let e = check_callback(bad, &[]).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadCallback, "{bad}");
        }
        let allow = vec!["https://ok.example/".to_owned()];
        assert!(check_callback("https://ok.example/hook", &allow).is_ok());
        assert!(check_callback("https://ok.example.evil/hook", &allow).is_err());
    }
}
