//! `GET /health` (the process runs), `GET /ready` (MySQL answers; Redis and read replicas
//! reported) and `GET /metrics` (Prometheus).

use http::header::RETRY_AFTER;
use http::StatusCode;

use crate::app::App;
use crate::response::{self, problem::RETRY_AFTER_SECONDS, HttpResponse};

#[must_use]
pub fn health() -> HttpResponse {
    response::json(StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
}

/// 200 when MySQL (the primary) answers within the deadline, else 503; Redis's state and each
/// read replica's are reported either way because the service works without them (reads fall
/// back to the primary). 503 from the moment shutdown begins.
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
    let mut body = format!(
        "{{\"status\":\"{}\",\"mysql\":\"{}\",\"redis\":\"{}\"",
        if mysql.is_ok() {
            "ready"
        } else {
            "unavailable"
        },
        state(mysql.is_ok()),
        state(redis)
    );
    write_replicas(&mut body, &app.store().replica_reports());
    body.push('}');
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

/// `,"replicas":[{"replica":0,"address":"host:port","state":"healthy","lag_ms":12.5}]`, only when
/// replicas are configured (`lag_ms` is null before the first measurement).
fn write_replicas(body: &mut String, replicas: &[crate::store::ReplicaReport]) {
    use std::fmt::Write as _;
    if replicas.is_empty() {
        return;
    }
    body.push_str(",\"replicas\":[");
    for (position, replica) in replicas.iter().enumerate() {
        if position > 0 {
            body.push(',');
        }
        let address = serde_json::to_string(&replica.address).unwrap_or_else(|_| "\"\"".into());
        let _ = write!(
            body,
            "{{\"replica\":{},\"address\":{address},\"state\":\"{}\",\"lag_ms\":",
            replica.index,
            replica.state.as_str()
        );
        match replica.lag {
            Some(lag) => {
                let _ = write!(body, "{}", lag.as_secs_f64() * 1_000.0);
            }
            None => body.push_str("null"),
        }
        body.push('}');
    }
    body.push(']');
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
