//! The one place where failures become responses: every stage's error to problem+json.
//!
//! Client mistakes are answered and logged at debug only; dependency failures are logged with
//! their cause (never sent to the client) and answered with a fast 503.

use std::sync::Arc;

use http::header::{ALLOW, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

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
                parameter: None,
            }
            .response(),
            ApiError::MethodNotAllowed(allow) => {
                let mut response = Problem {
                    kind: "method-not-allowed",
                    title: "Method not allowed",
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    detail: "this path does not accept that method; see the Allow header",
                    parameter: None,
                }
                .response();
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                response
            }
            ApiError::Database(cause) => {
                tracing::warn!(error = %cause, "database unavailable, answering 503");
                unavailable("the database did not answer in time; retry shortly")
            }
        }
    }
}

/// A 503 problem with `Retry-After`.
#[must_use]
pub fn unavailable(detail: &str) -> HttpResponse {
    let mut response = Problem {
        kind: "service-unavailable",
        title: "Service unavailable",
        status: StatusCode::SERVICE_UNAVAILABLE,
        detail,
        parameter: None,
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
        parameter: error.parameter(),
    }
    .response()
}
