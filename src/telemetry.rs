//! Logging set-up: `tracing` to stderr, as JSON lines in production and as readable text in a
//! terminal (`LOG_FORMAT`), filtered by `RUST_LOG` (default `info`).
//!
//! Nothing is logged per request at info level. Every line logged while handling a request names
//! it: the event formatter adds the id the request's task carries (see
//! [`crate::server::request_id::RequestId::scope`]) as `request_id`. The access log is a debug
//! event with the target `access`.

use std::fmt;
use std::io::IsTerminal as _;
use std::time::Duration;

use http::{Method, StatusCode};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::route::Route;

/// The target of the access log (`RUST_LOG=info,access=debug` shows it, in release builds too:
/// only trace events are compiled out, and a disabled debug event costs one atomic load).
pub const ACCESS_TARGET: &str = "access";

/// How log lines are written (`LOG_FORMAT`: `json`, `text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// Installs the global subscriber once (stderr, `RUST_LOG`); later calls (tests) are no-ops.
pub fn init(format: Option<LogFormat>) {
    let format = LogFormat::or_detect(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let _ = subscriber(format, filter, ansi, std::io::stderr).try_init();
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
        // No span fields: a request's id comes from its task (see `WithRequestId`), and no
        // other span is opened on the request path.
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(false)
                .with_span_list(false)
                .map_event_format(|inner| WithRequestId { inner, format })
                .finish(),
        ),
        LogFormat::Text => Box::new(
            builder
                .map_event_format(|inner| WithRequestId { inner, format })
                .finish(),
        ),
    }
}

/// Wraps an event formatter to add the id of the request being handled, when there is one: as
/// the first member of a JSON line (`{"request_id":"…",…}`), or a `request_id=…` prefix of a text
/// line. The id is validated to a charset that needs no JSON escaping
/// ([`crate::server::request_id::RequestId`]).
struct WithRequestId<F> {
    inner: F,
    format: LogFormat,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let with_id = crate::server::request_id::with_current(|id| match self.format {
            LogFormat::Json => {
                let mut line = String::with_capacity(256);
                self.inner
                    .format_event(ctx, Writer::new(&mut line), event)?;
                match line.strip_prefix('{') {
                    Some(rest) => write!(writer, "{{\"request_id\":\"{id}\",{rest}"),
                    None => writer.write_str(&line),
                }
            }
            LogFormat::Text => {
                write!(writer, "request_id={id} ")?;
                self.inner.format_event(ctx, writer.by_ref(), event)
            }
        });
        with_id.unwrap_or_else(|| self.inner.format_event(ctx, writer, event))
    }
}

/// Whether [`access`] would write a line: checked first so that a request does not enter its
/// id's scope (a clone of the id) for a line that the filter drops.
#[must_use]
pub fn access_enabled() -> bool {
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::DEBUG)
}

/// The access log line of one answered request (debug, target `access`), emitted inside the
/// request id's scope (`RequestId::in_scope`) so it carries the id.
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
        use crate::config::choice;
        assert_eq!(choice("JSON"), Ok(LogFormat::Json));
        assert_eq!(choice(" text "), Ok(LogFormat::Text));
        assert!(choice::<LogFormat>("yaml")
            .unwrap_err()
            .contains("`json`, `text`"));
        assert_eq!(
            LogFormat::or_detect(Some(LogFormat::Json)),
            LogFormat::Json,
            "a configured format wins over detection"
        );
    }
}
