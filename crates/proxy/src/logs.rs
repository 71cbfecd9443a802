//! Where the proxy's events go: diagnostics to stderr (`RUST_LOG`, default `info`), and
//! with `--access-log text|json` one line per request to stdout.

use clap::ValueEnum;
use roundrobin_hyper::ACCESS_LOG_TARGET;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The access log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AccessLog {
    /// `key=value` fields after a timestamp, as the rest of the logs.
    Text,
    /// One JSON object a line.
    Json,
}

/// Installs the subscriber.
pub(crate) fn init(access: Option<AccessLog>) {
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // One filter, not two nested ones.
        .with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info"))
                .and(filter_fn(|meta| meta.target() != ACCESS_LOG_TARGET)),
        );
    let is_access = || filter_fn(|meta| meta.target() == ACCESS_LOG_TARGET);
    // A list of boxed layers rather than optional ones: a `None` layer answers "always"
    // to every callsite, which made every span of `h2` be built and tracked by the
    // registry on the request path though nothing records it.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![diagnostics.boxed()];
    match access {
        Some(AccessLog::Text) => layers.push(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(false)
                .with_target(false)
                .with_filter(is_access())
                .boxed(),
        ),
        Some(AccessLog::Json) => layers.push(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stdout)
                .with_filter(is_access())
                .boxed(),
        ),
        None => {}
    }
    tracing_subscriber::registry().with(layers).init();
}
