//! `GET /health` (the process runs), `GET /ready` (MySQL answers; Redis reported) and
//! `GET /metrics` (Prometheus).

use http::header::RETRY_AFTER;
use http::StatusCode;

use crate::app::App;
use crate::response::{self, problem::RETRY_AFTER_SECONDS, HttpResponse};

#[must_use]
pub fn health() -> HttpResponse {
    response::json(StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
}

/// 200 when MySQL answers within the deadline, else 503; Redis's state is reported either way
/// because the service works without it. 503 from the moment shutdown begins.
pub async fn ready(app: &App) -> HttpResponse {
    if app.is_draining() {
        let mut response = response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &b"{\"status\":\"draining\"}"[..],
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
        return response;
    }
    let (mysql, redis) = tokio::join!(app.store().ping(), app.cache().l2_is_up());
    let state = |up: bool| if up { "up" } else { "down" };
    let body = format!(
        "{{\"status\":\"{}\",\"mysql\":\"{}\",\"redis\":\"{}\"}}",
        if mysql.is_ok() {
            "ready"
        } else {
            "unavailable"
        },
        state(mysql.is_ok()),
        state(redis)
    );
    if let Err(error) = &mysql {
        tracing::warn!(%error, "not ready: MySQL did not answer");
        let mut response = response::json(StatusCode::SERVICE_UNAVAILABLE, body);
        response
            .headers_mut()
            .insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
        return response;
    }
    response::json(StatusCode::OK, body)
}

/// `GET /metrics`: Prometheus text exposition.
#[must_use]
pub fn metrics() -> HttpResponse {
    let mut response = response::json(StatusCode::OK, crate::meter::render());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
