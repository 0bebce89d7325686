//! Outbound stage: the OAuth2 access token (`token`) and the external catalogue client
//! (`catalogue`), with the retry policy (`retry`), the circuit breaker (`breaker`) and the one
//! HTTP exchange (`transport`) they share.
//!
//! Owns every HTTP call this service makes to the outside world, and the Redis keys
//! `{namespace}:oauth:token` and `{namespace}:oauth:lock`. It serves the catalogue sync, which
//! runs beside the listing service: nothing here may ever run on the `GET /products/v1` path,
//! which answers from MySQL and the caches only. It never prints a client secret or a token (in
//! logs, errors or `Debug` output), never retries without a deadline, never waits on Redis for
//! longer than its short deadline (a Redis that does not answer means each instance fetches its
//! own token), and keeps a failing upstream's failures out of the callers' time with a breaker.

pub mod breaker;
pub mod catalogue;
mod retry;
pub mod token;
mod transport;

use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

use crate::config::Secret;

pub use breaker::BreakerState;
pub use catalogue::{
    CatalogueClient, CataloguePage, CatalogueProduct, MappingError, RejectedProduct,
};
pub use token::{AccessToken, TokenError, TokenProvider};

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-encoded id and secret: the method every
    /// authorization server must support.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body, for servers that only accept that.
    Body,
}

impl FromStr for ClientAuth {
    type Err = String;

    /// Parses `basic` or `body` (any case), as `OAUTH_CLIENT_AUTH` gives them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("basic") {
            Ok(ClientAuth::Basic)
        } else if text.eq_ignore_ascii_case("body") {
            Ok(ClientAuth::Body)
        } else {
            Err("must be basic or body".into())
        }
    }
}

/// How one outbound call is retried: each attempt is cut at `attempt_timeout`, the delays grow
/// exponentially from `base_delay` up to `max_delay` with full jitter, and no attempt starts and
/// no delay ends after `deadline` (counted from the start of the call).
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// The most one attempt (connect, send, read the whole body) may take.
    pub attempt_timeout: Duration,
    /// The most the whole call may take, retries and their delays included.
    pub deadline: Duration,
    /// The ceiling of the first delay; each later ceiling doubles.
    pub base_delay: Duration,
    /// The largest ceiling, so a long outage is probed at a steady pace.
    pub max_delay: Duration,
    /// Attempts at most, the first included; the deadline usually ends the call first.
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: 6,
        }
    }
}

/// Settings of the OAuth2 client-credentials token.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The authorization server's token endpoint (`OAUTH_TOKEN_URL`).
    pub token_url: Url,
    /// `OAUTH_CLIENT_ID`; not a secret, but it still only goes to the token endpoint.
    pub client_id: String,
    /// `OAUTH_CLIENT_SECRET`; a [`Secret`], so it never prints.
    pub client_secret: Secret,
    /// `OAUTH_SCOPE`, sent as `scope` when set.
    pub scope: Option<String>,
    /// `OAUTH_CLIENT_AUTH`: where the credentials go.
    pub client_auth: ClientAuth,
    /// Timeouts and retries of the token request.
    pub retry: RetrySettings,
    /// A token is not used during the last `margin` of its life (clock skew, the time a request
    /// takes to reach the catalogue); the Redis copy expires that much earlier. Capped at half of
    /// the token's life, so a short-lived token is still usable.
    pub margin: Duration,
    /// The background refresh starts this long before a token stops being usable (capped at
    /// half its usable life), so callers never wait for a refresh.
    pub refresh_ahead: Duration,
    /// The most one Redis call may take; past it Redis counts as unavailable.
    pub redis_timeout: Duration,
    /// How long an instance waits for another instance's refresh (polling the Redis token key)
    /// before fetching a token itself.
    pub lock_wait: Duration,
    /// Prefix of the Redis keys, as `CACHE_NAMESPACE` for the cache.
    pub namespace: String,
}

impl TokenSettings {
    /// The required settings, and the defaults for the rest.
    #[must_use]
    pub fn new(
        token_url: Url,
        client_id: impl Into<String>,
        client_secret: Secret,
        namespace: impl Into<String>,
    ) -> Self {
        TokenSettings {
            token_url,
            client_id: client_id.into(),
            client_secret,
            scope: None,
            client_auth: ClientAuth::Basic,
            retry: RetrySettings::default(),
            margin: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
            redis_timeout: Duration::from_millis(100),
            lock_wait: Duration::from_secs(2),
            namespace: namespace.into(),
        }
    }
}

/// When the catalogue's circuit breaker opens and how it recovers.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Share of failed attempts among the last `window` that opens the breaker (0.0 to 1.0).
    pub failure_rate: f32,
    /// How many recent attempts the failure rate is computed over. The rate is computed once the
    /// window is full, so a freshly closed breaker lets `window` attempts through before it can
    /// open again.
    pub window: usize,
    /// How long an open breaker fails calls at once before it lets trial calls through.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_rate: 0.5,
            window: 20,
            cool_down: Duration::from_secs(10),
        }
    }
}

/// Settings of the catalogue client.
#[derive(Debug, Clone)]
pub struct CatalogueSettings {
    /// The DummyJSON-compatible product list (`API_URL`), e.g. `https://dummyjson.com/products`.
    pub api_url: Url,
    /// Timeouts and retries of one page request.
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    /// The largest page body accepted; a bigger one is a decode error, not an allocation.
    pub max_body_bytes: usize,
}

impl CatalogueSettings {
    /// The required setting, and the defaults for the rest.
    #[must_use]
    pub fn new(api_url: Url) -> Self {
        CatalogueSettings {
            api_url,
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a catalogue call failed, as its caller (the sync) needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the catalogue did not answer within the attempt timeout")]
    Timeout,
    #[error("cannot connect to the catalogue")]
    Connect,
    #[error("the catalogue answered {status}")]
    Status {
        status: u16,
        /// The `Retry-After` of the answer, when it gave one in seconds.
        retry_after: Option<Duration>,
    },
    /// The connection failed after the request was sent (reset, truncated body).
    #[error("the exchange with the catalogue failed")]
    Transport,
    #[error("the catalogue's circuit breaker is open")]
    CircuitOpen,
    #[error("no access token for the catalogue")]
    Token(#[from] TokenError),
    #[error("the catalogue's answer is not a product page: {0}")]
    Decode(String),
    #[error("no answer from the catalogue within the deadline ({attempts} attempts)")]
    DeadlineExceeded {
        attempts: u32,
        #[source]
        last: Box<UpstreamError>,
    },
}

impl UpstreamError {
    /// Whether the same request may succeed if sent again soon: connect errors, timeouts, 429,
    /// 502, 503 and 504. Everything else is either permanent or already retried (the deadline).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Timeout | UpstreamError::Connect => true,
            UpstreamError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The wait the catalogue asked for, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this outcome says the catalogue is unhealthy: counted by the breaker. A 4xx
    /// (429 included: the catalogue is healthy and asks us to slow down) is not.
    fn counts_against_breaker(&self) -> bool {
        match self {
            UpstreamError::Timeout
            | UpstreamError::Connect
            | UpstreamError::Transport
            | UpstreamError::Decode(_) => true,
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::CircuitOpen
            | UpstreamError::Token(_)
            | UpstreamError::DeadlineExceeded { .. } => false,
        }
    }
}

impl retry::Transient for UpstreamError {
    fn is_retryable(&self) -> bool {
        UpstreamError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        UpstreamError::retry_after(self)
    }
}

/// A client that cannot be built: start-up only.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot use the Redis configuration")]
    Redis(#[source] crate::redis_connection::OpenError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| UpstreamError::Status {
            status,
            retry_after: None,
        };
        let cases = [
            (UpstreamError::Timeout, true),
            (UpstreamError::Connect, true),
            (status(429), true),
            (status(502), true),
            (status(503), true),
            (status(504), true),
            (status(500), false),
            (status(401), false),
            (status(404), false),
            (UpstreamError::Transport, false),
            (UpstreamError::CircuitOpen, false),
            (UpstreamError::Decode("x".into()), false),
            (UpstreamError::Token(TokenError::Timeout), false),
            (
                UpstreamError::DeadlineExceeded {
                    attempts: 3,
                    last: Box::new(UpstreamError::Timeout),
                },
                false,
            ),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
    }

    #[test]
    fn client_errors_do_not_count_against_the_breaker() {
        let status = |status| UpstreamError::Status {
            status,
            retry_after: None,
        };
        assert!(status(500).counts_against_breaker());
        assert!(status(503).counts_against_breaker());
        assert!(UpstreamError::Timeout.counts_against_breaker());
        assert!(!status(401).counts_against_breaker());
        assert!(!status(429).counts_against_breaker());
        assert!(!UpstreamError::CircuitOpen.counts_against_breaker());
    }

    #[test]
    fn client_auth_parses_the_setting() {
        assert_eq!("basic".parse(), Ok(ClientAuth::Basic));
        assert_eq!("BODY".parse(), Ok(ClientAuth::Body));
        assert!("post".parse::<ClientAuth>().is_err());
    }

    #[test]
    fn settings_do_not_print_the_secret() {
        let settings = TokenSettings::new(
            Url::parse("https://auth.example/token").unwrap(),
            "client",
            Secret::new("hunter2"),
            "ns",
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
