//! The most any HTTP server can do on this machine: hyper 1.x, the same runtime and allocator
//! as the service, answering every request with fixed bytes — a cached page of 20 products and
//! its headers, captured from the service by `perf/ceiling`. The service's L1-hit rate is
//! compared with this one's under the same wrk load.
//!
//! `cargo run --release --example ceiling -- ADDRESS BODY_FILE HEADERS_FILE`, where
//! `HEADERS_FILE` holds `name: value` lines to send with the body.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, body_file, headers_file] = args.as_slice() else {
        return Err("usage: ceiling ADDRESS BODY_FILE HEADERS_FILE".into());
    };
    let address: SocketAddr = address.parse()?;
    let body = Bytes::from(std::fs::read(body_file)?);
    let headers = read_headers(&std::fs::read_to_string(headers_file)?)?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let headers = headers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let mut response = Response::new(Full::new(body.clone()));
                for (name, value) in &headers {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn read_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, Box<dyn std::error::Error>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| {
            Ok((
                HeaderName::try_from(name.trim())?,
                HeaderValue::try_from(value.trim())?,
            ))
        })
        .collect()
}
