//! Server stage: the accept loop, one task per connection, limits and graceful drain.
//!
//! `run` takes its listener and its shutdown future as arguments, so tests bind port 0 and stop
//! it when they like. It never decides what a request means: that is [`App::handle`].

pub mod listener;
pub mod request_id;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
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
    // hyper (1.12) restarts its header-read timer whenever a kept-alive connection goes idle, so
    // this bounds the idle wait plus the next head; the first head gets the shorter
    // `header_read_timeout` from `first_head_deadline`.
    http.timer(TokioTimer::new())
        .header_read_timeout(
            settings
                .keep_alive_timeout
                .max(settings.header_read_timeout),
        )
        .max_header_size(settings.max_header_bytes)
        .keep_alive(true);
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
        let head_seen = Arc::new(AtomicBool::new(false));
        let first_head = first_head_deadline(settings.header_read_timeout, head_seen.clone());
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            head_seen.store(true, Ordering::Relaxed);
            async move {
                let started = std::time::Instant::now();
                let method = request.method().clone();
                let route = crate::route::route(&method, request.uri().path());
                let scoped = request_id::RequestId::of(request.headers())
                    .scope(guard_panics(&app, app.handle(peer, request)));
                tokio::pin!(scoped);
                let mut response = scoped.as_mut().await;
                let request_id = scoped.take_value().expect("the id is taken once, here");
                let elapsed = started.elapsed();
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
                () = first_head => tracing::debug!("no request head within the header read timeout; closed"),
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

/// Resolves when a new connection has not delivered its first request head within `limit`
/// (a slow or silent client holding a connection slot); never, once it has.
async fn first_head_deadline(limit: Duration, head_seen: Arc<AtomicBool>) {
    tokio::time::sleep(limit).await;
    if head_seen.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
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
