//! Logging set-up: `tracing` to stderr, as JSON lines in production and as readable text in a
//! terminal (`LOG_FORMAT`), filtered by `RUST_LOG` (default `info`).
//!
//! Nothing is logged per request at info level. Each request runs in a `request` span carrying
//! its id (see [`crate::server::request_id::RequestId::span`]), so every line logged while
//! handling it names the request; the access log is a debug event with the target `access`.

use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;
use std::time::Duration;

use http::{Method, StatusCode};
use tracing::Subscriber;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::route::Route;

/// The target of the per-request span. A directive enabling it at `error` is added to every
/// filter (see [`filter`]), so the span exists whenever any event may be logged, whatever
/// `RUST_LOG` names: a warning from `product_api::store` carries the request id even under
/// `RUST_LOG=product_api::store=debug`, which alone would not enable the span's target.
pub const REQUEST_SPAN_TARGET: &str = "product_api::request";

/// The target of the access log (`RUST_LOG=info,access=debug` shows it, in release builds too:
/// only trace events are compiled out, and a disabled debug event costs one atomic load).
pub const ACCESS_TARGET: &str = "access";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: what log shippers parse.
    Json,
    /// tracing-subscriber's human-readable lines.
    Text,
}

impl LogFormat {
    /// The configured format, or text when stderr is a terminal (someone is reading) and JSON
    /// otherwise (a log collector is).
    #[must_use]
    pub fn or_detect(configured: Option<LogFormat>) -> LogFormat {
        configured.unwrap_or_else(|| {
            if std::io::stderr().is_terminal() {
                LogFormat::Text
            } else {
                LogFormat::Json
            }
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err("must be `json` or `text`".into()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        })
    }
}

/// Installs the global subscriber once (stderr, `RUST_LOG`); later calls (tests) are no-ops.
pub fn init(format: Option<LogFormat>) {
    let format = LogFormat::or_detect(format);
    let filter =
        filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let _ = subscriber(format, filter, ansi, std::io::stderr).try_init();
}

/// `filter` plus the directive that keeps the request span enabled (see [`REQUEST_SPAN_TARGET`]).
#[must_use]
pub fn filter(filter: EnvFilter) -> EnvFilter {
    let directive: Directive = format!("{REQUEST_SPAN_TARGET}=error")
        .parse()
        .expect("a valid static directive");
    filter.add_directive(directive)
}

/// The subscriber production uses, writing to `writer`; tests and benchmarks pass their own.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        // The innermost span's fields (the request id) sit beside the event's; the list of
        // every enclosing span would repeat them.
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// The access log line of one answered request (debug, target `access`), emitted inside the
/// request's span so it carries the request id.
pub fn access(method: &Method, route: Route, status: StatusCode, elapsed: Duration) {
    tracing::debug!(
        target: ACCESS_TARGET,
        method = method.as_str(),
        route = crate::meter::route_label(route),
        status = status.as_u16(),
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_case_insensitively_and_name_the_choices() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().unwrap_err().contains("json"));
        assert_eq!(
            LogFormat::or_detect(Some(LogFormat::Json)),
            LogFormat::Json,
            "a configured format wins over detection"
        );
    }
}
