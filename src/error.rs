//! The one place where failures become responses: every stage's error to problem+json.
//!
//! Client mistakes are answered and logged at debug only; dependency failures are logged with
//! their cause (never sent to the client) and answered with a fast 503.

use std::sync::Arc;

use http::header::{ALLOW, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

use crate::request::webhook::{EventError, SignatureError};
use crate::request::ClientError;
use crate::response::problem::{Problem, RETRY_AFTER_SECONDS};
use crate::response::HttpResponse;
use crate::store::StoreError;

/// Everything that can stop a request from getting its 2xx.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("no such path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("database unavailable")]
    Database(#[source] Arc<StoreError>),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("webhooks are disabled: WEBHOOK_SECRET is not set")]
    WebhooksDisabled,
    #[error("another delivery of this event is being applied")]
    WebhookInFlight,
    #[error("the body is larger than allowed")]
    BodyTooLarge,
    #[error("the body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("rate limited for {0:?}")]
    RateLimited(std::time::Duration),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Database(Arc::new(error))
    }
}

impl ApiError {
    /// Renders the problem response, logging what operators need to know.
    #[must_use]
    pub fn into_response(self) -> HttpResponse {
        match self {
            ApiError::Client(error) => client_problem(&error),
            ApiError::NotFound => Problem {
                kind: "not-found",
                title: "Not found",
                status: StatusCode::NOT_FOUND,
                detail: "no resource at this path",
                at_fault: None,
            }
            .response(),
            ApiError::MethodNotAllowed(allow) => {
                let mut response = Problem {
                    kind: "method-not-allowed",
                    title: "Method not allowed",
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    detail: "this path does not accept that method; see the Allow header",
                    at_fault: None,
                }
                .response();
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                response
            }
            // Shedding is the overload rule working, request after request: counted in
            // `db_pool_shed_total`, and a warning each would flood the log when it matters most.
            ApiError::Database(cause) if matches!(*cause, StoreError::Saturated) => {
                tracing::debug!(error = %cause, "database saturated, answering 503");
                unavailable("the service is overloaded; retry shortly")
            }
            ApiError::Database(cause) => {
                tracing::warn!(error = %cause, "database unavailable, answering 503");
                unavailable("the database did not answer in time; retry shortly")
            }
            ApiError::Signature(error) => signature_problem(error),
            ApiError::Event(error) => event_problem(&error),
            ApiError::WebhooksDisabled => {
                unavailable("webhooks are disabled on this instance: WEBHOOK_SECRET is not set")
            }
            ApiError::WebhookInFlight => Problem {
                kind: "webhook-in-flight",
                title: "Event being processed",
                status: StatusCode::CONFLICT,
                detail: "another delivery of this event is being applied; retry later",
                at_fault: None,
            }
            .response(),
            ApiError::BodyTooLarge => Problem {
                kind: "body-too-large",
                title: "Body too large",
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: "the body must be at most 262144 bytes",
                at_fault: None,
            }
            .response(),
            ApiError::RateLimited(retry_after) => rate_limited(retry_after),
            ApiError::BodyUnreadable(reason) => {
                tracing::debug!(%reason, "unreadable request body");
                Problem {
                    kind: "invalid-body",
                    title: "Invalid body",
                    status: StatusCode::BAD_REQUEST,
                    detail: "the request body could not be read",
                    at_fault: None,
                }
                .response()
            }
        }
    }
}

fn signature_problem(error: SignatureError) -> HttpResponse {
    tracing::debug!(%error, "webhook rejected");
    let header = match error {
        SignatureError::MissingId => "webhook-id",
        SignatureError::BadTimestamp | SignatureError::StaleTimestamp => "webhook-timestamp",
        SignatureError::BadSignature => {
            return Problem {
                kind: "unauthorized",
                title: "Unauthorized",
                status: StatusCode::UNAUTHORIZED,
                detail: "the request is not authenticated",
                at_fault: None,
            }
            .response();
        }
    };
    Problem {
        kind: "invalid-webhook-headers",
        title: "Invalid webhook headers",
        status: StatusCode::BAD_REQUEST,
        detail: &error.to_string(),
        at_fault: Some(("header", header)),
    }
    .response()
}

fn event_problem(error: &EventError) -> HttpResponse {
    tracing::debug!(%error, "webhook event rejected");
    let (kind, title, status) = match error {
        EventError::InvalidJson(_) => ("invalid-body", "Invalid body", StatusCode::BAD_REQUEST),
        _ => (
            "invalid-event",
            "Invalid event",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    Problem {
        kind,
        title,
        status,
        detail: &error.to_string(),
        at_fault: error.field().map(|field| ("field", field)),
    }
    .response()
}

/// A 500 problem: a bug of ours, never a client's or a dependency's fault. Says nothing more.
#[must_use]
pub fn internal() -> HttpResponse {
    Problem {
        kind: "internal",
        title: "Internal error",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        detail: "the request failed because of an internal error",
        at_fault: None,
    }
    .response()
}

/// A 503 problem with `Retry-After`.
#[must_use]
/// 429 with the whole seconds after which one request fits again.
fn rate_limited(retry_after: std::time::Duration) -> HttpResponse {
    let mut response = Problem {
        kind: "rate-limited",
        title: "Too many requests",
        status: StatusCode::TOO_MANY_REQUESTS,
        detail: "this client has used its request quota; retry after the Retry-After delay",
        at_fault: None,
    }
    .response();
    let seconds = crate::limit::whole_seconds(retry_after).max(1);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

pub fn unavailable(detail: &str) -> HttpResponse {
    let mut response = Problem {
        kind: "service-unavailable",
        title: "Service unavailable",
        status: StatusCode::SERVICE_UNAVAILABLE,
        detail,
        at_fault: None,
    }
    .response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
    response
}

fn client_problem(error: &ClientError) -> HttpResponse {
    tracing::debug!(%error, "client mistake");
    let (kind, title) = match error {
        ClientError::UnknownParameter(_)
        | ClientError::RepeatedParameter(_)
        | ClientError::InvalidParameter { .. } => ("invalid-parameter", "Invalid parameter"),
        ClientError::UnsupportedSort => ("unsupported-sort", "Unsupported sort"),
        ClientError::PageTooLarge => ("page-too-large", "Page too large"),
        ClientError::InvalidCursor(_) => ("invalid-cursor", "Invalid cursor"),
    };
    Problem {
        kind,
        title,
        status: StatusCode::BAD_REQUEST,
        detail: &error.to_string(),
        at_fault: error.parameter().map(|name| ("parameter", name)),
    }
    .response()
}
