//! Outbound stage, OAuth2: the catalogue's access token, by the client-credentials grant
//! (RFC 6749 §4.4).
//!
//! Owns the token in three places: in process (an `ArcSwapOption`, so an outbound call reads it
//! without a lock or a Redis round trip), in Redis (`{namespace}:oauth:token`, shared by every
//! instance, expiring `margin` before the token does), and in flight (at most one refresh per
//! instance, whose result every caller that needs a token meanwhile shares). Across instances
//! the refresh lock `{namespace}:oauth:lock` (`SET NX PX` with a random owner, released by a
//! compare-and-delete script) makes one instance fetch while the others poll the token key.
//! A token is refreshed ahead of its expiry in the background (by [`TokenProvider::spawn_refresher`],
//! or by the first caller that sees it due), so callers do not wait for a refresh; a token the
//! catalogue rejects is dropped only if it is still the current one
//! ([`TokenProvider::replace_rejected`]).
//!
//! Never prints the client secret or a token (in logs, errors or `Debug` output); never waits on
//! Redis for more than `redis_timeout` (Redis down: each instance fetches and keeps its own
//! token); never retries the token endpoint in a tight loop or past the deadline.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::Script;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::retry::{self, Stopped, Transient};
use super::transport::{self, Failure};
use super::{BuildError, ClientAuth, TokenSettings};
use crate::redis_connection::{Redis, RedisConnection, RedisTarget, Timeouts};
use crate::redis_lock::{self, Lock};

/// A bearer token. Compares by value; prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token itself, for the `Authorization` header and nothing else.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Why there is no token. Cloned to every caller that waited for the same refresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint did not answer within the attempt timeout; or, from the catalogue
    /// client, no token came before its call's deadline (the refresh goes on without it).
    #[error("no token in time: the token endpoint did not answer")]
    Timeout,
    #[error("cannot connect to the token endpoint")]
    Connect,
    #[error("the exchange with the token endpoint failed")]
    Transport,
    #[error("the token endpoint answered {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 429: wrong credentials, grant or scope. Retrying would not help.
    #[error("the token endpoint refused the request ({status}, error: {})", .error.as_deref().unwrap_or("none given"))]
    Rejected {
        status: u16,
        /// The OAuth2 `error` code (`invalid_client`, `invalid_scope`, …), when it sent one.
        error: Option<String>,
    },
    #[error("the token endpoint's answer is not a bearer token: {0}")]
    Decode(String),
    #[error("no token within the deadline ({attempts} attempts)")]
    DeadlineExceeded {
        attempts: u32,
        #[source]
        last: Box<TokenError>,
    },
    /// The refresh task ended without an outcome (runtime shutting down).
    #[error("the token refresh was abandoned")]
    Abandoned,
}

impl Transient for TokenError {
    fn is_retryable(&self) -> bool {
        match self {
            TokenError::Timeout | TokenError::Connect | TokenError::Transport => true,
            TokenError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The token of one deployment, shared by the clones of this handle.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.inner.settings.token_url.as_str())
            .field("namespace", &self.inner.settings.namespace)
            .finish_non_exhaustive()
    }
}

/// The outcome of one refresh, as every waiter receives it.
type Refreshed = Result<Arc<CachedToken>, TokenError>;

struct Inner {
    settings: TokenSettings,
    http: reqwest::Client,
    redis: RedisConnection,
    token_key: String,
    lock_key: String,
    /// The token outbound calls use, read without a lock on every call.
    current: ArcSwapOption<CachedToken>,
    /// The refresh running in this instance, if any: a caller that needs a token while it runs
    /// waits for its outcome instead of starting another (one token request per instance).
    in_flight: Mutex<Option<watch::Receiver<Option<Refreshed>>>>,
    /// Never sent on: dropped with the provider, which stops the refresher.
    alive: watch::Sender<()>,
}

/// A token and when to stop using it and to replace it.
struct CachedToken {
    token: AccessToken,
    /// Past this, the token is not used (`margin` before it expires).
    usable_until: Instant,
    /// From this on, a refresh is due (`refresh_ahead` before `usable_until`).
    refresh_at: Instant,
}

impl CachedToken {
    /// A token usable for `usable_life` from `since`.
    fn new(token: AccessToken, since: Instant, usable_life: Duration, ahead: Duration) -> Self {
        let usable_until = since + usable_life;
        CachedToken {
            token,
            usable_until,
            refresh_at: usable_until - ahead.min(usable_life / 2),
        }
    }

    fn is_usable(&self, now: Instant) -> bool {
        now < self.usable_until
    }
}

/// The assumed life of a token whose response has no `expires_in` (it is only RECOMMENDED).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);
/// The largest token response accepted.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// The longest pause between two polls of the token key while another instance refreshes.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(100);
/// After a failed background refresh, the next waits up to this ceiling, doubling from
/// `REFRESH_RETRY_BASE`, with full jitter, plus the base.
const REFRESH_RETRY_BASE: Duration = Duration::from_secs(1);
const REFRESH_RETRY_CEILING: Duration = Duration::from_secs(30);

/// The token and its remaining life in milliseconds, in one round trip; nil without a token.
pub(crate) const READ_TOKEN: &str = r"
local token = redis.call('GET', KEYS[1])
if not token then
    return nil
end
return {token, redis.call('PTTL', KEYS[1])}";

impl TokenProvider {
    /// Creates the provider without fetching a token or connecting to Redis: neither being down
    /// at start-up is an error.
    pub fn new(settings: TokenSettings, redis: &RedisTarget) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.retry.attempt_timeout)
            // A redirected POST would turn into a GET without the credentials; never follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::Http)?;
        let timeouts = Timeouts {
            connect: settings.redis_timeout,
            response: settings.redis_timeout,
        };
        let redis = Redis::open(redis, timeouts)
            .map_err(BuildError::Redis)?
            .connection();
        let (alive, _) = watch::channel(());
        Ok(TokenProvider {
            inner: Arc::new(Inner {
                token_key: format!("{}:oauth:token", settings.namespace),
                lock_key: format!("{}:oauth:lock", settings.namespace),
                settings,
                http,
                redis,
                current: ArcSwapOption::empty(),
                in_flight: Mutex::new(None),
                alive,
            }),
        })
    }

    /// A usable token: the in-process one (no I/O) unless there is none or it has expired, in
    /// which case the caller waits for the refresh. A token that is due for refresh but still
    /// usable is returned at once, and the refresh starts in the background.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let now = Instant::now();
        if let Some(cached) = self.inner.current.load().as_ref() {
            if cached.is_usable(now) {
                if now >= cached.refresh_at {
                    drop(self.inner.start_refresh(Some(cached.token.clone())));
                }
                return Ok(cached.token.clone());
            }
        }
        let replacing = self.inner.current.load().as_ref().map(|c| c.token.clone());
        Ok(self.inner.refresh(replacing).await?.token.clone())
    }

    /// The upstream answered 401 to `rejected`: drops it, here and in Redis, but only if it is
    /// still the current token (a token another call already replaced it with stays), and
    /// returns a different one.
    pub async fn replace_rejected(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        let inner = &self.inner;
        inner.current.rcu(|current| match current {
            Some(cached) if cached.token == *rejected => None,
            other => other.clone(),
        });
        let key = inner.token_key.clone();
        let value = rejected.expose().to_owned();
        inner
            .redis_call(|mut connection| async move {
                redis_lock::delete_if_equal()
                    .key(key)
                    .arg(value)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
        if let Some(cached) = inner.current.load().as_ref() {
            if cached.is_usable(Instant::now()) {
                return Ok(cached.token.clone());
            }
        }
        // The refresh this caller joins may have started before the rejection and adopted the
        // rejected token; then one more.
        let mut fresh = inner.refresh(Some(rejected.clone())).await?;
        if fresh.token == *rejected {
            fresh = inner.refresh(Some(rejected.clone())).await?;
        }
        Ok(fresh.token.clone())
    }

    /// Starts the background refresher: it fetches a token at once if there is none, then
    /// refreshes each token when it is due, so callers find a usable token without waiting. It
    /// stops when `shutdown` resolves or when the last handle of this provider is dropped.
    pub fn spawn_refresher<S>(&self, shutdown: S) -> tokio::task::JoinHandle<()>
    where
        S: std::future::Future<Output = ()> + Send + 'static,
    {
        let provider = Arc::downgrade(&self.inner);
        let alive = self.inner.alive.subscribe();
        tokio::spawn(refresher(provider, alive, shutdown))
    }
}

/// The background refresher's loop; holds the provider only while it refreshes.
async fn refresher<S>(provider: Weak<Inner>, mut alive: watch::Receiver<()>, shutdown: S)
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        let wake_at = match provider.upgrade() {
            Some(inner) => inner.next_refresh(failures),
            None => return,
        };
        tokio::select! {
            () = &mut shutdown => return,
            // Nothing is ever sent: this resolves only when the provider is dropped.
            _ = alive.changed() => return,
            () = tokio::time::sleep_until(wake_at) => {}
        }
        let Some(inner) = provider.upgrade() else {
            return;
        };
        let current = inner.current.load_full();
        if let Some(cached) = &current {
            if Instant::now() < cached.refresh_at {
                // Someone refreshed meanwhile (a rejection, a caller).
                failures = 0;
                continue;
            }
        }
        let replacing = current.map(|cached| cached.token.clone());
        tokio::select! {
            () = &mut shutdown => return,
            outcome = inner.refresh(replacing) => match outcome {
                Ok(_) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "background OAuth2 token refresh failed");
                }
            },
        }
    }
}

impl Inner {
    /// When the refresher should next act.
    fn next_refresh(&self, failures: u32) -> Instant {
        let now = Instant::now();
        if failures > 0 {
            let ceiling = REFRESH_RETRY_BASE
                .saturating_mul(2_u32.saturating_pow(failures - 1))
                .min(REFRESH_RETRY_CEILING);
            return now + REFRESH_RETRY_BASE + retry::full_jitter(ceiling);
        }
        self.current
            .load()
            .as_ref()
            .map_or(now, |cached| cached.refresh_at)
    }

    /// Waits for the refresh in flight, or starts one, and returns its outcome.
    async fn refresh(self: &Arc<Self>, replacing: Option<AccessToken>) -> Refreshed {
        let mut outcome = self.start_refresh(replacing);
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(refreshed) => refreshed.clone(),
            Err(_closed) => None,
        };
        result.unwrap_or(Err(TokenError::Abandoned))
    }

    /// Joins the refresh in flight or starts one (in a task of its own, so a caller that gives
    /// up does not abandon the others); returns where its outcome will appear.
    fn start_refresh(
        self: &Arc<Self>,
        replacing: Option<AccessToken>,
    ) -> watch::Receiver<Option<Refreshed>> {
        let mut slot = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = slot.as_ref() {
            return outcome.clone();
        }
        let (sender, outcome) = watch::channel(None);
        *slot = Some(outcome.clone());
        drop(slot);
        let inner = Arc::clone(self);
        let mine = outcome.clone();
        tokio::spawn(async move {
            // Clears the slot even if this task is cancelled or panics, so the next caller
            // starts afresh instead of waiting on a dead refresh.
            let clear = ClearInFlight {
                inner: &inner,
                mine,
            };
            let refreshed = inner.run_refresh(replacing).await;
            if let Ok(cached) = &refreshed {
                inner.current.store(Some(Arc::clone(cached)));
            }
            drop(clear);
            sender.send_replace(Some(refreshed));
        });
        outcome
    }

    /// One refresh: a token other than `replacing` (the rejected, due or expired one), from
    /// another instance through Redis, or from the token endpoint under the refresh lock.
    async fn run_refresh(&self, replacing: Option<AccessToken>) -> Refreshed {
        let replacing = replacing.or_else(|| self.current.load().as_ref().map(|c| c.token.clone()));
        let acceptable = |candidate: &CachedToken| {
            Some(&candidate.token) != replacing.as_ref() && candidate.is_usable(Instant::now())
        };
        if let Some(current) = self.current.load_full() {
            if acceptable(&current) {
                return Ok(current);
            }
        }
        let give_up_waiting_at = Instant::now() + self.settings.lock_wait;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(shared) = self.read_shared().await {
                if acceptable(&shared) {
                    tracing::debug!("adopted the OAuth2 token another instance fetched");
                    crate::meter::token_refresh("adopted");
                    return Ok(Arc::new(shared));
                }
            }
            match self.lock().await {
                Lock::Held(owner) => {
                    // The previous holder may have stored a token just before releasing.
                    let refreshed = match self.read_shared().await {
                        Some(shared) if acceptable(&shared) => {
                            crate::meter::token_refresh("adopted");
                            Ok(shared)
                        }
                        _ => self.fetch_and_share().await,
                    };
                    self.unlock(owner).await;
                    return refreshed.map(Arc::new);
                }
                Lock::Unavailable => return self.fetch_and_share().await.map(Arc::new),
                Lock::Busy if Instant::now() + pause >= give_up_waiting_at => {
                    tracing::warn!(
                        "another instance's OAuth2 token refresh is taking too long; fetching a token without the lock"
                    );
                    return self.fetch_and_share().await.map(Arc::new);
                }
                Lock::Busy => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL_PAUSE);
                }
            }
        }
    }

    /// Fetches a token from the endpoint and stores it in Redis for the other instances.
    async fn fetch_and_share(&self) -> Result<CachedToken, TokenError> {
        let fetched = self.fetch().await?;
        let remaining = fetched
            .usable_until
            .saturating_duration_since(Instant::now());
        let ttl_ms = remaining.as_millis() as u64;
        if ttl_ms > 0 {
            let key = self.token_key.clone();
            let value = fetched.token.expose().to_owned();
            self.redis_call(|mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        }
        Ok(fetched)
    }

    /// The token endpoint, with retries up to the deadline.
    async fn fetch(&self) -> Result<CachedToken, TokenError> {
        let retry_settings = &self.settings.retry;
        let deadline = Instant::now() + retry_settings.deadline;
        let outcome = retry::run(retry_settings, deadline, "oauth2 token", || {
            self.request_token(deadline)
        })
        .await;
        match outcome {
            Ok(cached) => {
                tracing::info!(
                    usable_for = ?cached.usable_until.saturating_duration_since(Instant::now()),
                    "fetched a new OAuth2 access token"
                );
                crate::meter::token_refresh("fetched");
                Ok(cached)
            }
            Err(Stopped::Failed(error)) => {
                crate::meter::token_refresh("failed");
                Err(error)
            }
            Err(Stopped::DeadlineExceeded { attempts, last }) => {
                crate::meter::token_refresh("failed");
                Err(TokenError::DeadlineExceeded {
                    attempts,
                    last: Box::new(last),
                })
            }
        }
    }

    /// One token request (RFC 6749 §4.4.2).
    async fn request_token(&self, deadline: Instant) -> Result<CachedToken, TokenError> {
        let settings = &self.settings;
        let sent_at = Instant::now();
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &settings.scope {
            form.push(("scope", scope));
        }
        let mut request = self
            .http
            .post(settings.token_url.clone())
            .header(ACCEPT, "application/json");
        match settings.client_auth {
            ClientAuth::Basic => {
                request = request.header(AUTHORIZATION, basic_authorization(settings));
            }
            ClientAuth::Body => {
                form.push(("client_id", &settings.client_id));
                form.push(("client_secret", settings.client_secret.expose()));
            }
        }
        let request = request.form(&form);
        let timeout = retry::attempt_timeout(&settings.retry, deadline);
        let mut reply = transport::exchange(request, timeout, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|failure| match failure {
                Failure::Timeout => TokenError::Timeout,
                Failure::Connect => TokenError::Connect,
                Failure::Transport => TokenError::Transport,
                Failure::TooLarge => TokenError::Decode("the answer is too large".into()),
            })?;
        let status = reply.status.as_u16();
        if reply.status.is_success() {
            return parse_token(&mut reply.body, sent_at, settings);
        }
        if reply.status.is_client_error() && status != 429 && status != 408 {
            return Err(TokenError::Rejected {
                status,
                error: oauth_error_code(&mut reply.body),
            });
        }
        Err(TokenError::Status {
            status,
            retry_after: reply.retry_after,
        })
    }

    /// The token in Redis, if Redis answers and has one.
    async fn read_shared(&self) -> Option<CachedToken> {
        let key = self.token_key.clone();
        let (token, remaining_ms): (String, i64) = self
            .redis_call(|mut connection| async move {
                read_token()
                    .key(key)
                    .invoke_async::<Option<(String, i64)>>(&mut connection)
                    .await
            })
            .await
            .flatten()?;
        // -1: no expiry (not written by us); treat as unusable rather than immortal.
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).ok()?);
        Some(CachedToken::new(
            AccessToken(token.into()),
            Instant::now(),
            remaining,
            self.settings.refresh_ahead,
        ))
    }

    async fn lock(&self) -> Lock {
        // Outlives the holder's longest fetch, so a live holder never loses it; a dead holder's
        // lock expires soon after.
        let ttl = self.settings.retry.deadline + Duration::from_secs(1);
        let (command, owner) = redis_lock::acquire(&self.lock_key, ttl);
        let reply = self
            .redis_call(|mut connection| async move {
                command.query_async::<Option<String>>(&mut connection).await
            })
            .await;
        redis_lock::outcome(owner, reply)
    }

    async fn unlock(&self, owner: String) {
        let key = self.lock_key.clone();
        self.redis_call(|mut connection| async move {
            redis_lock::delete_if_equal()
                .key(key)
                .arg(owner)
                .invoke_async::<i64>(&mut connection)
                .await
        })
        .await;
    }

    /// Runs one Redis call under the deadline; `None` on any failure (Redis is optional here).
    async fn redis_call<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let call = command(self.redis.clone());
        match tokio::time::timeout(self.settings.redis_timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::debug!(%error, "redis call for the OAuth2 token failed");
                None
            }
            Err(_) => {
                tracing::debug!("redis call for the OAuth2 token timed out");
                None
            }
        }
    }
}

/// Clears `Inner::in_flight` if it still holds this refresh.
struct ClearInFlight<'a> {
    inner: &'a Inner,
    mine: watch::Receiver<Option<Refreshed>>,
}

impl Drop for ClearInFlight<'_> {
    fn drop(&mut self) {
        let mut slot = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|current| current.same_channel(&self.mine))
        {
            *slot = None;
        }
    }
}

/// The successful token response (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

/// The error response (RFC 6749 §5.2); only its code is kept.
#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
}

fn parse_token(
    body: &mut [u8],
    sent_at: Instant,
    settings: &TokenSettings,
) -> Result<CachedToken, TokenError> {
    let response: TokenResponse = simd_json::serde::from_slice(body)
        .map_err(|error| TokenError::Decode(format!("not the expected JSON ({error})")))?;
    if let Some(kind) = &response.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Decode(format!(
                "token_type {kind:?} is not Bearer"
            )));
        }
    }
    let valid_header = HeaderValue::from_str(&format!("Bearer {}", response.access_token)).is_ok();
    if response.access_token.is_empty() || !valid_header {
        return Err(TokenError::Decode(
            "access_token is empty or not header-safe".into(),
        ));
    }
    let life = response
        .expires_in
        .map_or(ASSUMED_LIFETIME, Duration::from_secs);
    let usable_life = life.saturating_sub(settings.margin.min(life / 2));
    // Counted from when the request left: the token cannot be older than that.
    Ok(CachedToken::new(
        AccessToken(response.access_token.into()),
        sent_at,
        usable_life,
        settings.refresh_ahead,
    ))
}

/// The `error` code of an error response, if it is a short ASCII word (safe to log).
fn oauth_error_code(body: &mut [u8]) -> Option<String> {
    let response: ErrorResponse = simd_json::serde::from_slice(body).ok()?;
    response.error.filter(|code| {
        code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    })
}

/// `Basic base64(form(id) ":" form(secret))`, RFC 6749 §2.3.1, marked sensitive.
fn basic_authorization(settings: &TokenSettings) -> HeaderValue {
    use base64::Engine as _;
    let credentials = format!(
        "{}:{}",
        form_encode(&settings.client_id),
        form_encode(settings.client_secret.expose())
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 Appendix B).
fn form_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
    out
}

fn read_token() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(READ_TOKEN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use reqwest::Url;

    fn settings() -> TokenSettings {
        TokenSettings::new(
            Url::parse("http://127.0.0.1:1/token").unwrap(),
            "client id",
            Secret::new("s3cret:&+/é"),
            "ns",
        )
    }

    #[test]
    fn form_encoding_follows_appendix_b() {
        let cases = [
            ("abc-._*XYZ09", "abc-._*XYZ09"),
            ("a b", "a+b"),
            ("s3cret:&+/é", "s3cret%3A%26%2B%2F%C3%A9"),
            ("~!", "%7E%21"),
        ];
        for (raw, encoded) in cases {
            assert_eq!(form_encode(raw), encoded, "{raw}");
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_then_base64() {
        use base64::Engine as _;
        let header = basic_authorization(&settings());
        assert!(header.is_sensitive());
        let encoded = header.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"client+id:s3cret%3A%26%2B%2F%C3%A9");
    }

    #[test]
    fn tokens_do_not_print() {
        let token = AccessToken("eyJhbGciOi.secret".into());
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
    }

    #[test]
    fn token_lifetimes_keep_the_margin_and_refresh_ahead() {
        let settings = TokenSettings {
            margin: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
            ..settings()
        };
        let now = Instant::now();
        let mut body =
            br#"{"access_token":"abc","token_type":"bearer","expires_in":3600}"#.to_vec();
        let cached = parse_token(&mut body, now, &settings).unwrap();
        assert_eq!(cached.token.expose(), "abc");
        assert_eq!(cached.usable_until, now + Duration::from_secs(3570));
        assert_eq!(cached.refresh_at, now + Duration::from_secs(3510));

        // A short-lived token keeps at least half its life usable, refreshed halfway through.
        let mut body = br#"{"access_token":"abc","token_type":"Bearer","expires_in":2}"#.to_vec();
        let cached = parse_token(&mut body, now, &settings).unwrap();
        assert_eq!(cached.usable_until, now + Duration::from_secs(1));
        assert_eq!(cached.refresh_at, now + Duration::from_millis(500));

        let mut body = br#"{"access_token":"abc"}"#.to_vec();
        let cached = parse_token(&mut body, now, &settings).unwrap();
        assert_eq!(
            cached.usable_until,
            now + ASSUMED_LIFETIME - settings.margin
        );
    }

    #[test]
    fn rejects_what_is_not_a_bearer_token() {
        let now = Instant::now();
        let cases: [&[u8]; 5] = [
            br#"{"access_token":"abc","token_type":"mac"}"#,
            br#"{"access_token":"","token_type":"Bearer"}"#,
            br#"{"access_token":"a\nb","token_type":"Bearer"}"#,
            br#"{"token_type":"Bearer"}"#,
            b"<html>",
        ];
        for body in cases {
            let outcome = parse_token(&mut body.to_vec(), now, &settings());
            assert!(
                matches!(outcome, Err(TokenError::Decode(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn keeps_only_a_plain_oauth_error_code() {
        assert_eq!(
            oauth_error_code(
                &mut br#"{"error":"invalid_client","error_description":"x"}"#.to_vec()
            ),
            Some("invalid_client".into())
        );
        assert_eq!(
            oauth_error_code(&mut br#"{"error":"bad\nline"}"#.to_vec()),
            None
        );
        assert_eq!(oauth_error_code(&mut b"oops".to_vec()), None);
    }
}
