//! The outbound stage against stand-ins for the outside world (`standin.rs`) and the real
//! Redis: the OAuth2 token (one fetch across instances, refresh ahead of expiry, 401, endpoint
//! down, Redis down) and the catalogue client (attempt timeout, jittered retries up to the
//! deadline, `Retry-After`, the breaker, paging and mapping of the 194 fixture products).
//!
//! Every test uses its own Redis namespace and its own stand-ins, so they run in parallel.
//! Waits use the stand-ins' counters; real time is waited only where time is the subject.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use product_api::config::Secret;
use product_api::domain::Price;
use product_api::redis_connection::RedisTarget;
use product_api::upstream::{
    AccessToken, BreakerState, CatalogueClient, CatalogueSettings, ClientAuth, RetrySettings,
    TokenError, TokenProvider, TokenSettings, UpstreamError,
};

use crate::helpers::{eventually, random_suffix};
use crate::standin::{
    fixture, Catalogue, Credentials, TokenEndpoint, TokenRequest, CLIENT_ID, CLIENT_SECRET,
};

/// The stand-in tokens' life: `expires_in` 2.
const TOKEN_LIFETIME: Duration = Duration::from_secs(2);

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL")
        .expect("TEST_REDIS_URL is not set: run the tests through scripts/test, which starts Redis")
}

fn namespace() -> String {
    format!("test-upstream-{}", random_suffix())
}

/// Fast retries, so failure paths take a second or two, not the production ten.
fn quick_retries(deadline: Duration) -> RetrySettings {
    RetrySettings {
        attempt_timeout: Duration::from_secs(1),
        deadline,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 100,
    }
}

/// A token usable for 1.8 s of its 2 s (margin 200 ms), refreshed from 0.9 s on.
fn token_settings(endpoint: &TokenEndpoint, namespace: &str) -> TokenSettings {
    TokenSettings {
        margin: Duration::from_millis(200),
        retry: quick_retries(Duration::from_secs(2)),
        ..TokenSettings::new(
            endpoint.url(),
            CLIENT_ID,
            Secret::new(CLIENT_SECRET),
            namespace,
        )
    }
}

fn provider(settings: TokenSettings) -> TokenProvider {
    TokenProvider::new(settings, &RedisTarget::single(&redis_url())).unwrap()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A token endpoint, a catalogue accepting its tokens, and a provider on a fresh namespace.
struct World {
    tokens: TokenEndpoint,
    catalogue: Catalogue,
    namespace: String,
    provider: TokenProvider,
}

impl World {
    async fn start() -> World {
        let tokens = TokenEndpoint::start(TOKEN_LIFETIME).await;
        let catalogue = Catalogue::start(&tokens).await;
        let namespace = namespace();
        let provider = provider(token_settings(&tokens, &namespace));
        World {
            tokens,
            catalogue,
            namespace,
            provider,
        }
    }

    fn client(&self, configure: impl FnOnce(&mut CatalogueSettings)) -> CatalogueClient {
        let mut settings = CatalogueSettings::new(self.catalogue.url());
        configure(&mut settings);
        CatalogueClient::new(settings, self.provider.clone()).unwrap()
    }
}

fn status(error: &UpstreamError) -> Option<u16> {
    match error {
        UpstreamError::Status { status, .. } => Some(*status),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth2 token
// ---------------------------------------------------------------------------------------------

/// 100 concurrent callers over two providers on `redis` sharing `namespace` all get the same
/// token, from one token request in all. Returns the endpoint and the token for more checks
/// (also run on a Redis Cluster, `cluster.rs`).
pub async fn one_token_for_100_callers_of_two_providers(
    redis: &RedisTarget,
    namespace: &str,
) -> (TokenEndpoint, AccessToken) {
    let tokens = TokenEndpoint::start(TOKEN_LIFETIME).await;
    // Slow enough that every caller arrives while the one fetch is in flight.
    tokens.control().set_delay(Duration::from_millis(150));
    let instances = [
        TokenProvider::new(token_settings(&tokens, namespace), redis).unwrap(),
        TokenProvider::new(token_settings(&tokens, namespace), redis).unwrap(),
    ];
    let callers: Vec<_> = (0..100)
        .map(|caller| {
            let instance = instances[caller % 2].clone();
            tokio::spawn(async move { instance.token().await })
        })
        .collect();
    let mut received = Vec::new();
    for caller in futures::future::join_all(callers).await {
        received.push(caller.unwrap().unwrap());
    }
    assert!(received.iter().all(|token| *token == received[0]));
    assert_eq!(tokens.control().requests(), 1, "one token request in all");
    (tokens, received.swap_remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_for_100_concurrent_callers_across_two_instances() {
    let namespace = namespace();
    let (tokens, token) =
        one_token_for_100_callers_of_two_providers(&RedisTarget::single(&redis_url()), &namespace)
            .await;

    // Shared in Redis with expires_in minus the margin; the lock is released.
    let mut redis = redis().await;
    let key = format!("{namespace}:oauth:token");
    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored, token.expose());
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=1_800).contains(&ttl_ms), "PTTL {ttl_ms}");
    let locked: bool = redis::cmd("EXISTS")
        .arg(format!("{namespace}:oauth:lock"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!locked);
    // Basic authentication by default, form-encoded credentials accepted by the stand-in.
    assert_eq!(
        tokens.seen(),
        vec![TokenRequest {
            credentials: Credentials::Basic,
            scope: None
        }]
    );
}

#[tokio::test]
async fn the_token_is_refreshed_in_the_background_before_it_expires() {
    let world = World::start().await;
    let first = world.provider.token().await.unwrap();
    let refresher = world.provider.spawn_refresher(std::future::pending());
    // The refresh (due 0.9 s after the first fetch) will take 400 ms at the endpoint.
    world.tokens.control().set_delay(Duration::from_millis(400));
    eventually(
        Duration::from_secs(3),
        "the background refresh reached the endpoint",
        || async { world.tokens.control().requests() == 2 },
    )
    .await;

    // During the refresh a caller gets the old token, still valid, without waiting.
    let asked = Instant::now();
    let during = world.provider.token().await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(50),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(during, first);
    let page = world.client(|_| {}).fetch_page(0, 1).await.unwrap();
    assert_eq!(page.products.len(), 1, "the old token still works");

    eventually(
        Duration::from_secs(3),
        "the new token replaced the old one",
        || async { world.provider.token().await.unwrap() != first },
    )
    .await;
    assert_eq!(world.tokens.control().requests(), 2);
    assert_eq!(world.catalogue.unauthorized(), 0);

    // A refresher stops when its shutdown signal fires…
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = world.provider.spawn_refresher(async {
        let _ = stopped.await;
    });
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), second)
        .await
        .expect("the refresher stops on shutdown")
        .unwrap();
    // …and when its provider is dropped.
    let World { provider, .. } = world;
    drop(provider);
    tokio::time::timeout(Duration::from_secs(1), refresher)
        .await
        .expect("the refresher stops when the provider is dropped")
        .unwrap();
}

#[tokio::test]
async fn a_401_replaces_the_token_once_and_retries_once() {
    let world = World::start().await;
    let client = world.client(|_| {});
    client.fetch_page(0, 5).await.unwrap();
    let first = world.provider.token().await.unwrap();
    assert_eq!(world.tokens.control().requests(), 1);

    world.tokens.revoke(first.expose());
    let page = client.fetch_page(5, 5).await.unwrap();
    assert_eq!(page.products[0].external_id, "6");
    assert_eq!(world.catalogue.unauthorized(), 1);
    assert_eq!(world.catalogue.control().requests(), 3, "ok, 401, retry");
    assert_eq!(world.tokens.control().requests(), 2, "one refresh");
    let second = world.provider.token().await.unwrap();
    assert_ne!(second, first);

    // A late 401 for the old token (a call that overlapped the refresh) keeps the new one, here
    // and in Redis: another instance finds it there without a token request.
    assert_eq!(
        world.provider.replace_rejected(&first).await.unwrap(),
        second
    );
    let other = provider(token_settings(&world.tokens, &world.namespace));
    assert_eq!(other.token().await.unwrap(), second);
    assert_eq!(world.tokens.control().requests(), 2);

    // A catalogue that rejects every token gets one retry, not a loop.
    world.tokens.reject_every_token();
    let error = client.fetch_page(0, 5).await.unwrap_err();
    assert_eq!(status(&error), Some(401), "{error:?}");
    assert_eq!(world.catalogue.unauthorized(), 3);
    assert_eq!(world.tokens.control().requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_down_gives_callers_a_clear_error_within_the_deadline() {
    let tokens = TokenEndpoint::start(TOKEN_LIFETIME).await;
    tokens.control().fail_always(503, None);
    let deadline = Duration::from_secs(1);
    let provider = provider(TokenSettings {
        retry: quick_retries(deadline),
        ..token_settings(&tokens, &namespace())
    });
    let started = Instant::now();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.token().await })
        })
        .collect();
    let outcomes = futures::future::join_all(callers).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < deadline + Duration::from_millis(500),
        "{elapsed:?}"
    );

    let attempts_seen = tokens.control().requests();
    for outcome in outcomes {
        let error = outcome.unwrap().unwrap_err();
        let TokenError::DeadlineExceeded { attempts, last } = &error else {
            panic!("expected the deadline, got {error:?}");
        };
        assert_eq!(
            **last,
            TokenError::Status {
                status: 503,
                retry_after: None
            }
        );
        // All 20 callers shared one refresh: its attempts are all the endpoint saw.
        assert_eq!(u64::from(*attempts), attempts_seen);
        let message = error.to_string();
        assert!(message.contains("deadline"), "{message}");
        assert!(!message.contains(CLIENT_SECRET));
    }
    // Retried with backoff: more than once, far fewer than a tight loop would in a second.
    assert!(
        (2..=30).contains(&attempts_seen),
        "{attempts_seen} attempts"
    );

    // Wrong credentials are not retried at all.
    let refused = TokenProvider::new(
        TokenSettings::new(tokens.url(), CLIENT_ID, Secret::new("wrong"), namespace()),
        &RedisTarget::single(&redis_url()),
    )
    .unwrap();
    tokens.control().heal();
    let before = tokens.control().requests();
    let error = refused.token().await.unwrap_err();
    assert_eq!(
        error,
        TokenError::Rejected {
            status: 401,
            error: Some("invalid_client".into())
        }
    );
    assert_eq!(tokens.control().requests(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_instance_fetches_and_keeps_its_own_token() {
    let tokens = TokenEndpoint::start(TOKEN_LIFETIME).await;
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let redis_down = format!("redis://{closed}/");
    let namespace = namespace();
    let first = TokenProvider::new(
        token_settings(&tokens, &namespace),
        &RedisTarget::single(&redis_down),
    )
    .unwrap();
    let second = TokenProvider::new(
        token_settings(&tokens, &namespace),
        &RedisTarget::single(&redis_down),
    )
    .unwrap();

    let started = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let first = first.clone();
            tokio::spawn(async move { first.token().await })
        })
        .collect();
    let mut received = HashSet::new();
    for caller in futures::future::join_all(callers).await {
        received.insert(caller.unwrap().unwrap().expose().to_owned());
    }
    assert_eq!(received.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        tokens.control().requests(),
        1,
        "one fetch within the instance"
    );

    let other = second.token().await.unwrap();
    assert!(!received.contains(other.expose()));
    assert_eq!(
        tokens.control().requests(),
        2,
        "the other instance fetched its own"
    );
    // Kept in process: no more requests.
    first.token().await.unwrap();
    second.token().await.unwrap();
    assert_eq!(tokens.control().requests(), 2);
}

#[tokio::test]
async fn client_credentials_go_in_the_body_when_configured() {
    let tokens = TokenEndpoint::start_expecting(TOKEN_LIFETIME, Credentials::Body).await;
    let provider = provider(TokenSettings {
        client_auth: ClientAuth::Body,
        scope: Some("catalogue:read".into()),
        ..token_settings(&tokens, &namespace())
    });
    let token: AccessToken = provider.token().await.unwrap();
    assert!(!format!("{token:?} {provider:?}").contains(token.expose()));
    assert_eq!(
        tokens.seen(),
        vec![TokenRequest {
            credentials: Credentials::Body,
            scope: Some("catalogue:read".into())
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Catalogue client
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_catalogue_is_cut_at_the_default_attempt_timeout() {
    let world = World::start().await;
    world.provider.token().await.unwrap();
    let client = world.client(|settings| settings.retry.max_attempts = 1);
    assert_eq!(
        CatalogueSettings::new(world.catalogue.url())
            .retry
            .attempt_timeout,
        Duration::from_secs(2)
    );
    world.catalogue.control().set_delay(Duration::from_secs(5));

    let started = Instant::now();
    let error = client.fetch_page(0, 10).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, UpstreamError::Timeout), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2_500),
        "{elapsed:?}"
    );
    assert_eq!(world.catalogue.control().requests(), 1);
}

#[tokio::test]
async fn retries_wait_jittered_growing_delays_and_stop_at_the_deadline() {
    let world = World::start().await;
    world.provider.token().await.unwrap();
    let deadline = Duration::from_millis(1_500);
    let base = Duration::from_millis(20);
    let max_delay = Duration::from_secs(1);
    let client = world.client(|settings| {
        settings.retry = RetrySettings {
            base_delay: base,
            max_delay,
            ..quick_retries(deadline)
        };
        // This test is about the retries: keep the breaker out of the way.
        settings.breaker.window = 1_000;
    });
    world.catalogue.control().fail_always(503, None);

    let started = Instant::now();
    let error = client.fetch_page(0, 10).await.unwrap_err();
    let elapsed = started.elapsed();
    let UpstreamError::DeadlineExceeded { attempts, last } = &error else {
        panic!("expected the deadline, got {error:?}");
    };
    assert_eq!(status(last), Some(503));
    assert!(
        elapsed < deadline + Duration::from_millis(100),
        "{elapsed:?}"
    );

    let arrivals = world.catalogue.control().arrivals();
    assert_eq!(arrivals.len() as u64, u64::from(*attempts));
    assert!(arrivals.len() >= 3, "{} attempts", arrivals.len());
    assert!(
        arrivals.iter().all(|arrival| *arrival < started + deadline),
        "no attempt after the deadline"
    );
    let gaps: Vec<Duration> = arrivals.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Each delay lies under its ceiling base·2ⁿ (capped): the ceilings grow, the delays vary.
    let slack = Duration::from_millis(40);
    for (retry, gap) in gaps.iter().enumerate() {
        let ceiling = base.saturating_mul(1 << retry.min(20)).min(max_delay);
        assert!(
            *gap <= ceiling + slack,
            "retry {retry}: {gap:?} > {ceiling:?}; {gaps:?}"
        );
    }
    let longest = gaps.iter().max().unwrap();
    let shortest = gaps.iter().min().unwrap();
    assert!(*longest > base * 2, "the ceiling grew: {gaps:?}");
    assert!(
        longest.saturating_sub(*shortest) > Duration::from_millis(10),
        "jittered: {gaps:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_deadline() {
    let world = World::start().await;
    world.provider.token().await.unwrap();
    let client = world.client(|settings| settings.retry = quick_retries(Duration::from_secs(3)));
    world.catalogue.control().fail_next(1, 429, Some(1));

    let page = client.fetch_page(0, 3).await.unwrap();
    assert_eq!(page.products.len(), 3);
    let arrivals = world.catalogue.control().arrivals();
    assert_eq!(arrivals.len(), 2);
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1_400),
        "{waited:?}"
    );

    // A wait past the deadline is not waited: the call ends at once.
    world.catalogue.control().fail_next(1, 503, Some(30));
    let started = Instant::now();
    let error = client.fetch_page(0, 3).await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::DeadlineExceeded { attempts: 1, last } if status(last) == Some(503)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(world.catalogue.control().requests(), 3);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_half_opens_and_closes() {
    let world = World::start().await;
    world.provider.token().await.unwrap();
    let cool_down = Duration::from_millis(300);
    let client = world.client(|settings| {
        settings.retry.max_attempts = 1;
        settings.breaker.window = 4;
        settings.breaker.failure_rate = 0.5;
        settings.breaker.cool_down = cool_down;
    });
    let catalogue = world.catalogue.control();
    catalogue.fail_always(500, None);

    // The window fills with four failures; the fifth computes the rate and opens it.
    for call in 1..=5 {
        assert_eq!(
            client.breaker_state(),
            BreakerState::Closed,
            "before call {call}"
        );
        let error = client.fetch_page(0, 1).await.unwrap_err();
        assert_eq!(status(&error), Some(500));
    }
    let opened = Instant::now();
    assert_eq!(client.breaker_state(), BreakerState::Open);

    // Open: calls fail at once and never reach the catalogue.
    for _ in 0..20 {
        let error = client.fetch_page(0, 1).await.unwrap_err();
        assert!(matches!(error, UpstreamError::CircuitOpen), "{error:?}");
        assert!(!error.is_retryable());
    }
    assert!(opened.elapsed() < cool_down);
    assert_eq!(client.breaker_state(), BreakerState::Open);
    assert_eq!(catalogue.requests(), 5);

    // After the cool-down it lets trial calls through; successes close it.
    catalogue.heal();
    eventually(
        Duration::from_secs(2),
        "the breaker half-opened",
        || async { client.breaker_state() == BreakerState::HalfOpen },
    )
    .await;
    assert!(opened.elapsed() >= cool_down.saturating_sub(Duration::from_millis(20)));
    for _ in 0..2 {
        client.fetch_page(0, 1).await.unwrap();
    }
    assert_eq!(client.breaker_state(), BreakerState::Closed);
    assert_eq!(catalogue.requests(), 7);
}

#[tokio::test]
async fn reads_all_194_products_across_pages_and_maps_them() {
    let world = World::start().await;
    let client = world.client(|_| {});
    let mut products = Vec::new();
    let mut skip = 0;
    let mut pages = 0;
    loop {
        let page = client.fetch_page(skip, 50).await.unwrap();
        pages += 1;
        assert_eq!(page.total, 194);
        assert_eq!(page.skip, skip);
        assert_eq!(page.limit, page.products.len() as u64);
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        skip += page.products.len() as u64;
        products.extend(page.products);
        if skip >= page.total {
            break;
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(products.len(), 194);

    let first = &products[0];
    assert_eq!(first.external_id, "1");
    assert_eq!(first.name, "Essence Mascara Lash Princess");
    assert_eq!(first.price, Price(999));
    assert_eq!(first.category, "beauty");
    for (product, expected) in products.iter().zip(fixture()) {
        assert_eq!(product.external_id, expected["id"].to_string());
        assert_eq!(product.name, expected["title"].as_str().unwrap());
        assert_eq!(
            product.description,
            expected["description"].as_str().unwrap()
        );
        assert_eq!(product.category, expected["category"].as_str().unwrap());
        // An independent route to cents for these two-place prices.
        let cents = (expected["price"].as_f64().unwrap() * 100.0).round() as i64;
        assert_eq!(product.price, Price(cents), "{}", product.external_id);
    }
    let ids: HashSet<&str> = products.iter().map(|p| p.external_id.as_str()).collect();
    assert_eq!(ids.len(), 194);

    // DummyJSON's limit=0: everything in one page.
    let everything = client.fetch_page(0, 0).await.unwrap();
    assert_eq!(everything.products.len(), 194);
    assert_eq!(everything.limit, 194);
    assert_eq!(world.tokens.control().requests(), 1);
}
