//! Criterion benchmarks of what observability costs each request: recording the request-duration
//! histogram with its labels, deriving the request id and stamping it into the response header,
//! and the per-request log scope (the request id on the task) under the production subscriber.
//!
//! `cargo bench --bench observability`; figures go to `perf/RESULTS.md` with the command.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::FutureExt as _;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use product_api::response::HttpResponse;
use product_api::route::Route;
use product_api::server::request_id::{RequestId, X_REQUEST_ID};
use product_api::telemetry::{self, LogFormat};
use tracing_subscriber::EnvFilter;

fn page_response() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"data\":[]}")));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, product_api::response::JSON);
    response
}

/// `meter::request` as the server calls it once per answer. The recorder's upkeep (which drains
/// histogram samples) runs between criterion's samples, outside the timed loop, as the
/// production timer does every few seconds.
fn request_histogram(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async { product_api::meter::install() });
    c.bench_function("meter_request_histogram", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                product_api::meter::request(
                    black_box(&Method::GET),
                    black_box(Route::ListProducts),
                    black_box(StatusCode::OK),
                    black_box(Duration::from_micros(250)),
                );
            }
            let elapsed = started.elapsed();
            product_api::meter::upkeep();
            elapsed
        });
    });
}

fn request_ids(c: &mut Criterion) {
    let mut given = HeaderMap::new();
    given.insert(
        X_REQUEST_ID,
        HeaderValue::from_static("client-id-0123456789"),
    );
    let none = HeaderMap::new();
    let mut group = c.benchmark_group("request_id_of_and_stamp");
    for (name, headers) in [("generated", &none), ("given", &given)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                page_response,
                |mut response| {
                    RequestId::of(black_box(headers)).stamp(&mut response);
                    response
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// What the server does per request for logging: run the handler with the request's id set on
/// its task, take the id back, emit the (debug, so filtered out) access line with it set only
/// if the filter lets it through.
fn scope_per_request(id: RequestId) -> RequestId {
    let scoped = id.scope(async {});
    let mut scoped = std::pin::pin!(scoped);
    scoped.as_mut().now_or_never().expect("ready at once");
    let id = scoped.take_value().expect("the id is taken once");
    if telemetry::access_enabled() {
        id.in_scope(|| {
            telemetry::access(
                &Method::GET,
                Route::ListProducts,
                StatusCode::OK,
                Duration::from_micros(250),
            );
        });
    }
    id
}

fn request_log_scope(c: &mut Criterion) {
    let id = RequestId::of(&HeaderMap::new());
    let mut group = c.benchmark_group("request_log_scope");
    // Before any subscriber exists (a binary that never installs one).
    group.bench_function("no_subscriber", |b| {
        b.iter_batched(|| id.clone(), scope_per_request, BatchSize::SmallInput);
    });
    // As production: the global JSON subscriber at `info`, writing nowhere (nothing is logged).
    let filter = EnvFilter::new("info");
    tracing::subscriber::set_global_default(telemetry::subscriber(
        LogFormat::Json,
        filter,
        false,
        std::io::sink,
    ))
    .expect("the only global subscriber of this benchmark");
    group.bench_function("json_subscriber", |b| {
        b.iter_batched(|| id.clone(), scope_per_request, BatchSize::SmallInput);
    });
    group.finish();
}

criterion_group!(benches, request_histogram, request_ids, request_log_scope);
criterion_main!(benches);
