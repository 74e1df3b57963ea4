//! Logging: [`init`] installs the subscriber. The per-request instrumentation (one line and
//! the metrics per request) is HTTP middleware and lives in `api::middleware`.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;
/// Installs the global subscriber: `RUST_LOG` filter (default `info`), human-readable
/// lines with key=value fields on stderr. Calling it twice is harmless (the second call is ignored).
///
/// At `debug` or finer, a line is also written when a span closes, with its time busy and
/// idle: the timings of a request's service and store calls. Not at `info`, where a request
/// writes its request line only.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let span_events = match filter.max_level_hint() {
        Some(level) if level >= LevelFilter::DEBUG => FmtSpan::CLOSE,
        _ => FmtSpan::NONE,
    };
    // Logs go to stderr so that stdout carries only what a command prints (a token, the
    // dev curl line); colours only when a person is watching.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_span_events(span_events)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
