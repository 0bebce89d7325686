//! `POST /webhook`: verify → parse → fast duplicate check (Redis) → apply exactly once (MySQL)
//! → invalidate every instance's cached pages of the product's old and new category.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::app::App;
use crate::cache::Scope;
use crate::error::ApiError;
use crate::request::webhook::{parse_event, MAX_BODY_BYTES};
use crate::response::{self, HttpResponse};
use crate::store::events::{server_code, Applied, ER_LOCK_WAIT_TIMEOUT};
use crate::store::StoreError;

/// How long processed event ids stay in the Redis fast path (MySQL keeps them for good).
const FAST_PATH_TTL: Duration = Duration::from_secs(72 * 3600);

/// Answers one webhook delivery.
pub async fn receive<B>(app: &App, headers: &HeaderMap, body: B) -> Result<HttpResponse, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let secret = app.webhook_secret().ok_or(ApiError::WebhooksDisabled)?;
    let body = read_body(body).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let event_id = secret.verify(headers, &body, now)?;
    let mut body = body.to_vec();
    let event = parse_event(&mut body)?;
    if app.cache().l2().webhook_seen(&event_id).await {
        crate::meter::webhook("duplicate");
        return Ok(status("duplicate"));
    }
    let applied = match app.store().apply_event(&event_id, &event).await {
        Ok(applied) => applied,
        Err(StoreError::Database(error)) if server_code(&error) == Some(ER_LOCK_WAIT_TIMEOUT) => {
            return Err(ApiError::WebhookInFlight);
        }
        Err(error) => return Err(error.into()),
    };
    if let Applied::Changed(moved) = &applied {
        app.cache()
            .invalidate_soon(Scope::of_change(moved.categories(), moved.texts()))
            .await;
    }
    app.cache()
        .l2()
        .remember_webhook(&event_id, FAST_PATH_TTL)
        .await;
    let outcome = match applied {
        Applied::Changed(_) | Applied::Stale => "processed",
        Applied::Duplicate => "duplicate",
    };
    crate::meter::webhook(outcome);
    Ok(status(outcome))
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(error) => Err(ApiError::BodyUnreadable(error.to_string())),
    }
}

fn status(outcome: &str) -> HttpResponse {
    response::json(StatusCode::OK, format!("{{\"status\":\"{outcome}\"}}"))
}
