//! Server stage: the accept loop, one task per connection, limits and graceful drain.
//!
//! `run` takes its listener and its shutdown future as arguments, so tests bind port 0 and stop
//! it when they like. It never decides what a request means: that is [`App::handle`].

pub mod listener;
pub mod request_id;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use futures_util::FutureExt as _;

use crate::app::App;
use crate::config::ServerSettings;
use crate::response::HttpResponse;

pub use listener::{bind, BindError};

/// The longest pause after repeated accept errors (e.g. out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most the configured grace period.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    // Caps open connections: hyper has no limit of its own, and each connection holds memory.
    let connection_slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // No timer for hyper: its header-read timeout re-arms a timer on every request; each
    // connection's `idle_watchdog` bounds the same waits with one timer per idle period.
    http.header_read_timeout(None)
        .max_header_size(settings.max_header_bytes)
        .keep_alive(true);
    let idle_limit = settings
        .keep_alive_timeout
        .max(settings.header_read_timeout);
    let mut accept_backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = connection_slots.clone().acquire_owned() => slot.expect("semaphore never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => {
                accept_backoff = Duration::from_millis(5);
                (stream, peer.ip())
            }
            Err(error) => {
                tracing::warn!(%error, backoff = ?accept_backoff, "accept failed");
                tokio::time::sleep(accept_backoff).await;
                accept_backoff = (accept_backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let activity = Arc::new(Activity::new());
        let watchdog = idle_watchdog(activity.clone(), settings.header_read_timeout, idle_limit);
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            let activity = activity.clone();
            async move {
                let started = Instant::now();
                activity.begin();
                let method = request.method().clone();
                let route = crate::route::route(&method, request.uri().path());
                let scoped = request_id::RequestId::of(request.headers())
                    .scope(guard_panics(&app, app.handle(peer, request)));
                tokio::pin!(scoped);
                let mut response = scoped.as_mut().await;
                let request_id = scoped.take_value().expect("the id is taken once, here");
                let elapsed = started.elapsed();
                activity.end(started + elapsed);
                crate::meter::request(&method, route, response.status(), elapsed);
                if crate::telemetry::access_enabled() {
                    request_id.in_scope(|| {
                        crate::telemetry::access(&method, route, response.status(), elapsed);
                    });
                }
                request_id.stamp(&mut response);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended with an error");
                },
                () = watchdog => tracing::debug!("no request head within the idle limit; closed"),
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(grace = ?settings.shutdown_grace, "grace period over; closing remaining connections");
        }
    }
}

/// When a connection's last request ended, for its [`idle_watchdog`]: one atomic store per
/// request, where hyper's header-read timeout moved a timer in tokio's wheel per request.
struct Activity {
    accepted: Instant,
    /// [`Activity::NONE_YET`], [`Activity::BUSY`], or when the last request ended, in
    /// milliseconds after `accepted`.
    last: AtomicU64,
}

impl Activity {
    const NONE_YET: u64 = u64::MAX;
    const BUSY: u64 = u64::MAX - 1;

    fn new() -> Self {
        Activity {
            accepted: Instant::now(),
            last: AtomicU64::new(Self::NONE_YET),
        }
    }

    /// A request head has arrived: the connection is not idle until [`Activity::end`].
    fn begin(&self) {
        self.last.store(Self::BUSY, Ordering::Relaxed);
    }

    fn end(&self, at: Instant) {
        let millis = u64::try_from(at.duration_since(self.accepted).as_millis()).unwrap_or(0);
        self.last
            .store(millis.min(Self::BUSY - 1), Ordering::Relaxed);
    }

    /// When the connection's wait for its next head runs out, or `None` while it handles one.
    fn deadline(&self, first_head: Duration, idle: Duration) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            Self::NONE_YET => Some(self.accepted + first_head),
            Self::BUSY => None,
            ended => Some(self.accepted + Duration::from_millis(ended) + idle),
        }
    }
}

/// Resolves when a connection has waited too long for a request head: `first_head` after it was
/// accepted (a silent or slow client holding a slot), or `idle` after its last request ended
/// (kept alive and idle, or a slow next head). A request being handled is never cut: its own
/// deadlines bound it. Sleeps until the current deadline and rechecks, so a busy connection
/// wakes about once per `idle`, not once per request.
async fn idle_watchdog(activity: Arc<Activity>, first_head: Duration, idle: Duration) {
    loop {
        let deadline = activity
            .deadline(first_head, idle)
            .unwrap_or_else(|| Instant::now() + idle);
        if deadline <= Instant::now() {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Runs a handler so that a panic in one request answers that request with a 500 problem and is
/// counted, instead of tearing down the connection (or, with `panic = "abort"`, the process).
///
/// A combinator, not an `async fn`: an `async fn` would keep `handler` as an argument beside the
/// `CatchUnwind` holding it, doubling the future hyper moves per request.
pub fn guard_panics<'a>(
    app: &'a App,
    handler: impl Future<Output = HttpResponse> + 'a,
) -> impl Future<Output = HttpResponse> + 'a {
    std::panic::AssertUnwindSafe(handler)
        .catch_unwind()
        .map(|outcome| outcome.unwrap_or_else(|panic| answer_panic(app, &*panic)))
}

fn answer_panic(app: &App, panic: &(dyn std::any::Any + Send)) -> HttpResponse {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    app.record_panic();
    tracing::error!(%message, "a request handler panicked; answered 500");
    crate::error::internal()
}
