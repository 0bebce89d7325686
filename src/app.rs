//! The application: every pool, cache and key, built once; and the function that answers a
//! request, callable by tests without a socket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use std::net::IpAddr;

use http::header::{HeaderValue, IF_NONE_MATCH};
use http::{Request, StatusCode};

use crate::cache::{l1::L1, l2::L2, ResponseCache};
use crate::config::Config;
use crate::endpoints;
use crate::error::ApiError;
use crate::limit::policy::PolicyKind;
use crate::limit::RateLimiter;
use crate::request::cursor::CursorKey;
use crate::request::webhook::WebhookSecret;
use crate::response::HttpResponse;
use crate::route::{route, Route};
use crate::store::Store;

/// The policy a route is charged to; probes and metrics are never limited, so an orchestrator
/// or a scraper is never refused.
fn policy_of(route: Route) -> Option<PolicyKind> {
    match route {
        Route::Health | Route::Ready | Route::Metrics => None,
        Route::Webhook => Some(PolicyKind::Webhook),
        Route::ListProducts | Route::OpenApi | Route::MethodNotAllowed(_) | Route::NotFound => {
            Some(PolicyKind::Listing)
        }
    }
}

/// The response with the limiter's headers; a refusal becomes the 429 problem.
fn answer(verdict: &crate::limit::Verdict, response: HttpResponse) -> HttpResponse {
    let mut response = match verdict.outcome {
        crate::limit::Outcome::Allowed { .. } => response,
        crate::limit::Outcome::Limited { retry_after } => {
            ApiError::RateLimited(retry_after).into_response()
        }
    };
    verdict.stamp(&mut response);
    response
}

/// The settings a Redis configuration error is blamed on.
const REDIS_SETTING: &str = "REDIS_CLUSTER_URLS or REDIS_URL";

/// Everything a request needs, shared by all connections.
pub struct App {
    store: Arc<Store>,
    cache: Arc<ResponseCache>,
    cursor_key: CursorKey,
    limiter: Arc<RateLimiter>,
    webhook_secret: Option<WebhookSecret>,
    /// `Cache-Control` of listing responses, matching the L2 TTL.
    cache_control: HeaderValue,
    /// Set when shutdown begins: `/ready` answers 503 while requests are still served.
    draining: AtomicBool,
    /// Handler panics caught by the server (each answered 500).
    panics: AtomicU64,
}

impl App {
    /// Connects the pool (and warms it), prepares the caches. Redis being down is not an error.
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        let cursor_secret = config
            .cursor_secret
            .as_ref()
            .context("CURSOR_SECRET: is not set; it signs pagination cursors (32+ bytes, the same on every instance)")?;
        // Before the store: it keeps metric handles, which are no-ops if taken before the
        // recorder exists.
        crate::meter::install();
        let store = Arc::new(
            Store::with_replicas(
                config.database_url.expose(),
                &config.store,
                &config.replicas,
            )
            .context("DATABASE_URL / DATABASE_READ_URLS")?,
        );
        store
            .warm(config.store.pool_min)
            .await
            .context("connecting to MySQL (DATABASE_URL)")?;
        let l1 = L1::new(config.l1_capacity_bytes, config.l1_ttl);
        l1.spawn_sweeper();
        let redis = config.redis_target();
        if redis.is_cluster() {
            tracing::info!("REDIS_CLUSTER_URLS is set: every Redis use goes to the Redis Cluster");
        }
        let cursor_key = CursorKey::new(cursor_secret.expose().as_bytes());
        let l2 = L2::new(&redis, config.l2.clone())
            .context(REDIS_SETTING)?
            .with_page_signer(cursor_key.signer_id());
        let cache_control =
            HeaderValue::try_from(format!("public, max-age={}", config.l2.ttl.as_secs()))
                .expect("digits are a valid header value");
        // Replicas are not needed to start: they join the rotation once a check proves them fresh.
        store.spawn_replica_monitor();
        let mut cache = ResponseCache::new(l1, l2, config.lock_wait)
            .with_invalidation_batch(config.invalidation_batch)
            .with_admission(config.l2_admission)
            .with_first_miss_reads(config.l2_first_miss_reads);
        if let Some(window) = store.primary_window() {
            cache = cache.with_invalidation_hook(move || window.open());
        }
        let cache = Arc::new(cache);
        // Redis down: the listener catches up once it can subscribe.
        let _ = cache.sync_generation().await;
        cache.spawn_invalidation_listener();
        cache.spawn_invalidation_batcher();
        let limiter = RateLimiter::new(&config.rate_limit, &redis, &config.l2.namespace)
            .context(REDIS_SETTING)?;
        if config.webhook_secret.is_none() {
            tracing::warn!("WEBHOOK_SECRET is not set: POST /webhook answers 503 until it is");
        }
        Ok(App {
            store,
            cache,
            cursor_key,
            limiter,
            webhook_secret: config.webhook_secret.clone(),
            cache_control,
            draining: AtomicBool::new(false),
            panics: AtomicU64::new(0),
        })
    }

    /// Answers one request from `peer`; every error becomes its response here.
    ///
    /// The rate limit is charged before the work, except for conditional requests: a 304 costs
    /// no quota, so those are answered first and charged only when the answer is not a 304
    /// (a client that is being refused is refused without that work).
    pub async fn handle<B>(&self, peer: IpAddr, request: Request<B>) -> HttpResponse
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let route = route(request.method(), request.uri().path());
        let Some(kind) = policy_of(route) else {
            return self.dispatch(route, request).await;
        };
        let client = self.limiter.clients().resolve(peer, request.headers());
        // Only reads are answered before they are charged: a write must not happen and then
        // be refused.
        let conditional =
            request.method().is_safe() && request.headers().contains_key(IF_NONE_MATCH);
        if conditional && !self.limiter.is_blocked(kind, &client) {
            let response = self.dispatch(route, request).await;
            if response.status() == StatusCode::NOT_MODIFIED {
                return response;
            }
            return match self.limiter.check(kind, &client).await {
                None => response,
                Some(verdict) => answer(&verdict, response),
            };
        }
        match self.limiter.check(kind, &client).await {
            None => self.dispatch(route, request).await,
            Some(verdict) if verdict.is_allowed() => {
                let response = self.dispatch(route, request).await;
                answer(&verdict, response)
            }
            Some(verdict) => answer(&verdict, HttpResponse::default()),
        }
    }

    async fn dispatch<B>(&self, route: Route, request: Request<B>) -> HttpResponse
    where
        B: hyper::body::Body<Data = bytes::Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let outcome = match route {
            Route::ListProducts => {
                endpoints::products::list(self, request.uri(), request.headers()).await
            }
            Route::Health => Ok(endpoints::health::health()),
            // Routes whose futures outweigh a listing's are boxed: inline, their state would
            // size every request's future, which hyper moves per request.
            Route::Ready => Ok(Box::pin(endpoints::health::ready(self)).await),
            Route::Metrics => Ok(endpoints::health::metrics()),
            Route::OpenApi => Ok(endpoints::openapi::document(request.headers())),
            Route::Webhook => {
                let (parts, body) = request.into_parts();
                Box::pin(endpoints::webhook::receive(self, &parts.headers, body)).await
            }
            Route::MethodNotAllowed(allow) => Err(ApiError::MethodNotAllowed(allow)),
            Route::NotFound => Err(ApiError::NotFound),
        };
        outcome.unwrap_or_else(ApiError::into_response)
    }

    #[must_use]
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    #[must_use]
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Shutdown has begun: report not ready, keep serving.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn record_panic(&self) {
        crate::meter::panic_caught();
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Handler panics caught so far.
    #[must_use]
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn webhook_secret(&self) -> Option<&WebhookSecret> {
        self.webhook_secret.as_ref()
    }

    #[must_use]
    pub fn cursor_key(&self) -> &CursorKey {
        &self.cursor_key
    }

    #[must_use]
    pub fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    /// Closes the MySQL pool once no request holds the app any more.
    pub async fn close(self) {
        if let Ok(store) = Arc::try_unwrap(self.store) {
            store.disconnect().await;
        }
    }
}
