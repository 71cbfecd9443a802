//! Where the proxy's events go: diagnostics to stderr (`RUST_LOG`, default `info`), and
//! with `--access-log text|json` one line per request to stdout.

use core::cell::RefCell;
use core::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use roundrobin_hyper::ACCESS_LOG_TARGET;
use thread_local::ThreadLocal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, SubscriberExt};
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
    // A list of boxed layers rather than optional ones: a `None` layer answers "always"
    // to every callsite, which made every span of `h2` be built and tracked by the
    // registry on the request path though nothing records it.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![diagnostics.boxed()];
    if let Some(format) = access {
        let stdout = |line: &[u8]| {
            // One write a line (stdout is line-buffered), whole under the lock.
            let _ = std::io::stdout().lock().write_all(line);
        };
        layers.push(
            AccessLines::new(format, stdout)
                .with_filter(filter_fn(|meta| meta.target() == ACCESS_LOG_TARGET))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).init();
}

/// Writes access-log events, one line each, in the format of `tracing-subscriber`'s
/// `fmt` layer (text: `TIMESTAMP  INFO key=value ..`; JSON: `{"timestamp":..,
/// "level":"INFO", the fields, "target":..}`), but each field straight into the line:
/// no JSON value built per event, and the timestamp's date and time rewritten once a
/// second. Each thread formats into a buffer of its own (no lock but the output's).
pub(crate) struct AccessLines<W> {
    format: AccessLog,
    write: W,
    lines: ThreadLocal<RefCell<Line>>,
}

/// A thread's line being written, and its timestamp text up to the second.
#[derive(Default)]
struct Line {
    text: String,
    /// The Unix second `stamp` is of.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    stamp: String,
}

impl<W: Fn(&[u8]) + Send + Sync + 'static> AccessLines<W> {
    /// Lines in `format`, each given whole to `write`.
    pub(crate) fn new(format: AccessLog, write: W) -> Self {
        Self {
            format,
            write,
            lines: ThreadLocal::new(),
        }
    }
}

impl<S: Subscriber, W: Fn(&[u8]) + Send + Sync + 'static> Layer<S> for AccessLines<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // An event logged while formatting one (nothing here logs) is left out.
        let Ok(mut line) = self.lines.get_or_default().try_borrow_mut() else {
            return;
        };
        let line = &mut *line;
        line.text.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if line.second != Some(now.as_secs()) {
            line.stamp.clear();
            push_date_time(&mut line.stamp, now.as_secs());
            line.second = Some(now.as_secs());
        }
        let text = &mut line.text;
        let time = Time(&line.stamp, now.subsec_micros());
        let level = event.metadata().level().as_str();
        match self.format {
            AccessLog::Text => {
                let _ = write!(text, "{time} {level:>5}");
                event.record(&mut TextFields(text));
            }
            AccessLog::Json => {
                let _ = write!(text, "{{\"timestamp\":\"{time}\",\"level\":\"{level}\"");
                event.record(&mut JsonFields(text));
                text.push_str(",\"target\":");
                push_json_str(text, event.metadata().target());
                text.push('}');
            }
        }
        text.push('\n');
        (self.write)(text.as_bytes());
    }
}

/// An event's time as both formats write it: `YYYY-MM-DDTHH:MM:SS.micros` and `Z`
/// (the date and time to the second already formatted).
struct Time<'a>(&'a str, u32);

impl fmt::Display for Time<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}Z", self.0, self.1)
    }
}

/// Fields as ` key=value` (values as their `Display` or `Debug` text, strings bare).
struct TextFields<'a>(&'a mut String);

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

/// Fields as `,"key":value`: numbers and booleans bare, everything else a JSON string.
struct JsonFields<'a>(&'a mut String);

impl JsonFields<'_> {
    /// `,"name":`. A field's name is written as it is: the access-log events' fields
    /// are named by Rust identifiers (`roundrobin_hyper`'s `ACCESS_LOG_TARGET` lists
    /// them), nothing to escape.
    fn key(&mut self, field: &Field) {
        self.0.push_str(",\"");
        self.0.push_str(field.name());
        self.0.push_str("\":");
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.0, "{value}");
        } else {
            self.0.push_str("null");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push('"');
        // Written as is, then escaped if it has to be (rarely): one pass over the
        // value's bytes, not an escaping writer under every piece of its formatting.
        let start = self.0.len();
        let _ = write!(self.0, "{value:?}");
        if needs_escape(&self.0[start..]) {
            let raw = self.0.split_off(start);
            let _ = JsonEscape(self.0).write_str(&raw);
        }
        self.0.push('"');
    }
}

/// Whether `s` has a byte that must be escaped inside a JSON string: `"`, `\\` or a
/// control character (each ASCII; no byte of a multi-byte UTF-8 character is below
/// 0x80, so text can be looked at a byte at a time). No early exit: the loop compiles
/// to vector compares.
fn needs_escape(s: &str) -> bool {
    s.as_bytes()
        .iter()
        .fold(false, |found, &b| found | escaped(b))
}

/// Whether byte `b` is escaped inside a JSON string.
fn escaped(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// `s` as a JSON string, quotes included.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if needs_escape(s) {
        let _ = JsonEscape(out).write_str(s);
    } else {
        out.push_str(s);
    }
    out.push('"');
}

/// Writes text escaped for the inside of a JSON string (RFC 8259: `"`, `\` and the
/// control characters).
struct JsonEscape<'a>(&'a mut String);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            if !escaped(b) {
                continue;
            }
            self.0.push_str(&s[start..i]);
            match b {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                _ => {
                    let _ = write!(self.0, "\\u{b:04x}");
                }
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of Unix second `secs`.
fn push_date_time(out: &mut String, secs: u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The lines an access layer in `format` writes for `log`.
    fn lines(format: AccessLog, log: impl FnOnce()) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let layer = AccessLines::new(format, move |line: &[u8]| {
            sink.lock().unwrap().extend_from_slice(line);
        });
        tracing::subscriber::with_default(Registry::default().with(layer), log);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn event() {
        let client = "127.0.0.1:5000".to_owned();
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            client = %client,
            method = %http::Method::GET,
            path = %"/a\"b\\c?x=1\u{1}",
            server = %"-",
            status = 200u16,
            latency_ms = 0.25,
            retries = 0u32,
        );
    }

    #[test]
    fn json_lines_are_json_objects_with_every_field() {
        let lines = lines(AccessLog::Json, event);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let value: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["client"], "127.0.0.1:5000");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["path"], "/a\"b\\c?x=1\u{1}");
        assert_eq!(value["server"], "-");
        assert_eq!(value["status"], 200);
        assert_eq!(value["latency_ms"], 0.25);
        assert_eq!(value["retries"], 0);
        assert_eq!(value["target"], ACCESS_LOG_TARGET);
        let stamp = value["timestamp"].as_str().unwrap();
        // `2026-12-07T22:26:55.779852Z`
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }

    #[test]
    fn text_lines_are_key_value_fields_after_the_time() {
        let lines = lines(AccessLog::Text, event);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let (stamp, rest) = lines[0].split_once(' ').unwrap();
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert_eq!(
            rest,
            " INFO client=127.0.0.1:5000 method=GET path=/a\"b\\c?x=1\u{1} server=- \
             status=200 latency_ms=0.25 retries=0"
        );
    }

    #[test]
    fn dates_from_unix_seconds() {
        let date = |secs| {
            let mut s = String::new();
            push_date_time(&mut s, secs);
            s
        };
        assert_eq!(date(0), "1970-01-01T00:00:00");
        assert_eq!(date(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date(1_796_683_615), "2026-12-07T22:46:55");
        assert_eq!(date(4_102_444_799), "2099-12-31T23:59:59");
        // Every day from 1970 to 2100 follows the one before it.
        let mut before = civil_from_days(0);
        for day in 1..47_482 {
            let (y, m, d) = civil_from_days(day);
            let next_day = (y, m, d) == (before.0, before.1, before.2 + 1);
            let next_month = (y, m, d) == (before.0, before.1 + 1, 1);
            let next_year = (y, m, d) == (before.0 + 1, 1, 1) && before.1 == 12;
            assert!(
                next_day || next_month || next_year,
                "{before:?} then {:?}",
                (y, m, d)
            );
            assert!(d <= 31 && (1..=12).contains(&m), "{:?}", (y, m, d));
            before = (y, m, d);
        }
    }
}
