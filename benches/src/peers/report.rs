//! The results: medians over rounds, the markdown table and the SVG chart.

use core::fmt::Write as _;

use super::Protocol;

/// What one load run (wrk or h2load) measured, in the units of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadResult {
    /// Completed requests per second.
    pub(crate) rps: f64,
    /// Completed requests.
    pub(crate) requests: u64,
    /// Median latency, µs (wrk only).
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile latency, µs (wrk only).
    pub(crate) p99_us: Option<f64>,
    /// 99.9th percentile latency, µs (wrk only).
    pub(crate) p999_us: Option<f64>,
    /// Mean latency, µs.
    pub(crate) mean_us: f64,
    /// Largest latency, µs.
    pub(crate) max_us: f64,
    /// Failed requests: socket errors, timeouts, error statuses.
    pub(crate) errors: u64,
}

/// One load run of one row and the balancer's CPU time during it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// What the load tool reported.
    pub(crate) load: LoadResult,
    /// Balancer user CPU per completed request, µs.
    pub(crate) user_us: f64,
    /// Balancer system CPU per completed request, µs.
    pub(crate) system_us: f64,
}

/// The balancer's memory with idle keep-alive connections open.
#[derive(Debug, Clone)]
pub(crate) struct Memory {
    /// RSS before the connections were opened, KiB.
    pub(crate) idle_kib: u64,
    /// RSS with the connections open, KiB.
    pub(crate) loaded_kib: u64,
    /// Connections open (each with one answered request).
    pub(crate) connections: usize,
    /// Why fewer than asked were opened, if so.
    pub(crate) error: Option<String>,
}

impl Memory {
    /// (RSS with connections − RSS idle) / connections.
    pub(crate) fn kib_per_connection(&self) -> Option<f64> {
        (self.connections > 0)
            .then(|| (self.loaded_kib as f64 - self.idle_kib as f64) / self.connections as f64)
    }
}

/// One table row: a target loaded over one protocol.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The target's name (the same in every protocol group).
    pub(crate) name: String,
    /// The protocol group it belongs to.
    pub(crate) protocol: Protocol,
    /// Why it was not run, if so (e.g. the proxy build has no TLS flags).
    pub(crate) unsupported: Option<String>,
}

/// Medians over the rounds of one row at one concurrency.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub(crate) rps: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    pub(crate) mean_us: f64,
    pub(crate) max_us: f64,
    pub(crate) user_us: f64,
    pub(crate) system_us: f64,
    pub(crate) total_us: f64,
    /// Errors summed over the rounds (not a median).
    pub(crate) errors: u64,
}

impl Summary {
    /// The median of each figure over `samples` (each figure on its own); a
    /// percentile is `None` unless every sample has it.
    pub(crate) fn of(samples: &[Sample]) -> Self {
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let opt = |f: fn(&Sample) -> Option<f64>| {
            let v: Option<Vec<f64>> = samples.iter().map(f).collect();
            v.filter(|v| !v.is_empty()).map(median)
        };
        Self {
            rps: m(|s| s.load.rps),
            p50_us: opt(|s| s.load.p50_us),
            p99_us: opt(|s| s.load.p99_us),
            p999_us: opt(|s| s.load.p999_us),
            mean_us: m(|s| s.load.mean_us),
            max_us: m(|s| s.load.max_us),
            user_us: m(|s| s.user_us),
            system_us: m(|s| s.system_us),
            total_us: m(|s| s.user_us + s.system_us),
            errors: samples.iter().map(|s| s.load.errors).sum(),
        }
    }
}

/// The median (mean of the middle two for an even count); 0 for none.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Everything measured: `samples[row][concurrency]` holds one sample per round.
#[derive(Debug)]
pub(crate) struct Results {
    /// The rows, grouped by protocol; the first of each protocol is the baseline of
    /// that protocol's ratios.
    pub(crate) rows: Vec<Row>,
    /// The connection counts.
    pub(crate) concurrencies: Vec<u32>,
    /// Concurrent streams per h2c connection.
    pub(crate) streams: u32,
    /// One sample per round, per row and concurrency.
    pub(crate) samples: Vec<Vec<Vec<Sample>>>,
    /// Memory per row, if measured (HTTP/1.1 rows only).
    pub(crate) memory: Vec<Option<Memory>>,
}

impl Results {
    /// Empty results for `rows` × `concurrencies`.
    pub(crate) fn new(rows: Vec<Row>, concurrencies: Vec<u32>, streams: u32) -> Self {
        let samples = vec![vec![Vec::new(); concurrencies.len()]; rows.len()];
        let memory = vec![None; rows.len()];
        Self {
            rows,
            concurrencies,
            streams,
            samples,
            memory,
        }
    }

    fn summary(&self, row: usize, concurrency: usize) -> Summary {
        Summary::of(&self.samples[row][concurrency])
    }

    /// The protocols present, in row order.
    fn protocols(&self) -> Vec<Protocol> {
        let mut protocols: Vec<Protocol> = Vec::new();
        for r in &self.rows {
            if !protocols.contains(&r.protocol) {
                protocols.push(r.protocol);
            }
        }
        protocols
    }

    /// The rows of `protocol`, by index.
    fn rows_of(&self, protocol: Protocol) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].protocol == protocol)
            .collect()
    }

    /// The markdown table: per protocol a group, in it per concurrency one row per
    /// target; every figure a median over rounds and a ratio to the group's first row
    /// at the same concurrency.
    pub(crate) fn table(&self) -> String {
        const COLUMNS: usize = 12;
        let mut t = String::from(
            "| target | conns | req/s | p50 | p99 | p99.9 | mean | max | CPU user µs/req \
             | CPU sys µs/req | CPU total µs/req | KiB per idle conn |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for protocol in self.protocols() {
            let rows = self.rows_of(protocol);
            let _ = writeln!(
                t,
                "| **{}** |{}",
                protocol.label(),
                " |".repeat(COLUMNS - 1)
            );
            let first = rows[0];
            let base_mem = self.memory[first]
                .as_ref()
                .and_then(Memory::kib_per_connection);
            for (c, &conns) in self.concurrencies.iter().enumerate() {
                let conns = match protocol {
                    Protocol::H2c => format!("{conns}×{}", self.streams),
                    _ => conns.to_string(),
                };
                let base = self.summary(first, c);
                for &i in &rows {
                    let name = &self.rows[i].name;
                    if let Some(why) = &self.rows[i].unsupported {
                        let _ = writeln!(
                            t,
                            "| {name} | {conns} | {why} |{}",
                            " – |".repeat(COLUMNS - 3)
                        );
                        continue;
                    }
                    let s = self.summary(i, c);
                    let errors = if s.errors > 0 {
                        format!(" ({} errors)", s.errors)
                    } else {
                        String::new()
                    };
                    let memory = match &self.memory[i] {
                        Some(m) => match m.kib_per_connection() {
                            Some(k) => {
                                let short = m
                                    .error
                                    .as_ref()
                                    .map(|_| format!(", {} conns", m.connections))
                                    .unwrap_or_default();
                                format!("{k:.1} {}{short}", ratio(k, base_mem))
                            }
                            None => "no connection".into(),
                        },
                        None => "–".into(),
                    };
                    let latency = |v: Option<f64>, b: Option<f64>| match v {
                        Some(v) => format!("{} {}", duration(v), ratio(v, b)),
                        None => "–".into(),
                    };
                    let _ = writeln!(
                        t,
                        "| {name}{errors} | {conns} | {:.0} {} | {} | {} | {} | {} | {} | {:.1} {} | {:.1} {} | {:.1} {} | {memory} |",
                        s.rps,
                        ratio(s.rps, Some(base.rps)),
                        latency(s.p50_us, base.p50_us),
                        latency(s.p99_us, base.p99_us),
                        latency(s.p999_us, base.p999_us),
                        latency(Some(s.mean_us), Some(base.mean_us)),
                        latency(Some(s.max_us), Some(base.max_us)),
                        s.user_us,
                        ratio(s.user_us, Some(base.user_us)),
                        s.system_us,
                        ratio(s.system_us, Some(base.system_us)),
                        s.total_us,
                        ratio(s.total_us, Some(base.total_us)),
                    );
                }
            }
        }
        t
    }

    /// The requests/s of every round, to show the spread behind the medians.
    pub(crate) fn rounds(&self) -> String {
        let mut t = String::new();
        for (c, conns) in self.concurrencies.iter().enumerate() {
            for (i, row) in self.rows.iter().enumerate() {
                if row.unsupported.is_some() {
                    continue;
                }
                let rounds: Vec<String> = self.samples[i][c]
                    .iter()
                    .map(|s| format!("{:.0}", s.load.rps))
                    .collect();
                let _ = writeln!(
                    t,
                    "- {} {}, {conns} conns: {}",
                    row.protocol.name(),
                    row.name,
                    rounds.join(", ")
                );
            }
        }
        t
    }

    /// The idle-connection RSS figures behind the last column.
    pub(crate) fn memory_notes(&self) -> String {
        let mut t = String::new();
        for (row, m) in self.rows.iter().zip(&self.memory) {
            if let Some(m) = m {
                let _ = write!(
                    t,
                    "- {}: RSS {} KiB idle, {} KiB with {} connections",
                    row.name, m.idle_kib, m.loaded_kib, m.connections
                );
                if let Some(e) = &m.error {
                    let _ = write!(t, " (stopped: {e})");
                }
                t.push('\n');
            }
        }
        t
    }

    /// An SVG chart, one band per protocol: req/s and CPU µs per request (user and
    /// system stacked), one bar per target and concurrency, and in the HTTP/1.1 band
    /// KiB per idle connection. Rows not run are left out. Plain SVG text, no fonts
    /// needed to write it.
    pub(crate) fn svg(&self) -> String {
        let protocols = self.protocols();
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            w = PANEL_W * 3.0,
            h = H * protocols.len().max(1) as f64,
        );
        let n = self.concurrencies.len();
        for (band, protocol) in protocols.into_iter().enumerate() {
            let y0 = H * band as f64;
            let rows: Vec<usize> = self
                .rows_of(protocol)
                .into_iter()
                .filter(|&i| self.rows[i].unsupported.is_none())
                .collect();
            let names: Vec<String> = rows.iter().map(|&i| self.rows[i].name.clone()).collect();
            let bars = |f: &dyn Fn(Summary) -> Vec<f64>| -> Vec<Vec<Vec<f64>>> {
                rows.iter()
                    .map(|&i| (0..n).map(|c| f(self.summary(i, c))).collect())
                    .collect()
            };
            let label = protocol.chart_label();
            panel(
                &mut svg,
                (0.0, y0),
                &format!("{label}: requests/s (higher is better)"),
                &names,
                &self.concurrencies,
                &bars(&|s| vec![s.rps]),
            );
            panel(
                &mut svg,
                (PANEL_W, y0),
                &format!("{label}: CPU µs/request, user (dark) + sys"),
                &names,
                &self.concurrencies,
                &bars(&|s| vec![s.user_us, s.system_us]),
            );
            if rows.iter().any(|&i| self.memory[i].is_some()) {
                let memory: Vec<Vec<Vec<f64>>> = rows
                    .iter()
                    .map(|&i| {
                        let k = self.memory[i]
                            .as_ref()
                            .and_then(Memory::kib_per_connection)
                            .unwrap_or(0.0);
                        vec![vec![k.max(0.0)]]
                    })
                    .collect();
                panel(
                    &mut svg,
                    (2.0 * PANEL_W, y0),
                    "KiB RSS per idle keep-alive connection",
                    &names,
                    &[],
                    &memory,
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Width of one chart panel.
const PANEL_W: f64 = 400.0;
/// Height of the chart.
const H: f64 = 420.0;

/// Bar colours per concurrency (stack layers lighter).
const COLOURS: [[&str; 2]; 3] = [
    ["#1f77b4", "#aec7e8"],
    ["#ff7f0e", "#ffbb78"],
    ["#2ca02c", "#98df8a"],
];

/// One panel at `(x, y0)`: per target a group of bars (one per series), each bar a stack.
fn panel(
    svg: &mut String,
    (x, y0): (f64, f64),
    title: &str,
    targets: &[String],
    series: &[u32],
    values: &[Vec<Vec<f64>>],
) {
    let (left, top, width, height) = (x + 50.0, y0 + 40.0, 330.0, 250.0);
    let max = values
        .iter()
        .flatten()
        .map(|stack| stack.iter().sum::<f64>())
        .fold(0.0, f64::max);
    let step = nice_step(max / 5.0);
    let top_value = (max / step).ceil().max(1.0) * step;
    let y = |v: f64| top + height - v / top_value * height;
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
        left + width / 2.0,
        y0 + 20.0
    );
    let mut tick = 0.0;
    while tick <= top_value * 1.0001 {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + width,
            left - 4.0,
            y(tick) + 4.0,
            short(tick),
            y = y(tick)
        );
        tick += step;
    }
    let group = width / targets.len().max(1) as f64;
    let per_group = values.first().map_or(1, Vec::len).max(1);
    let bar = group * 0.8 / per_group as f64;
    for (i, (name, bars)) in targets.iter().zip(values).enumerate() {
        let gx = left + group * i as f64 + group * 0.1;
        for (b, stack) in bars.iter().enumerate() {
            let mut base = 0.0;
            for (layer, v) in stack.iter().enumerate() {
                let colour = COLOURS[b % COLOURS.len()][layer.min(1)];
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                     <title>{name}: {v:.1}</title></rect>",
                    gx + bar * b as f64,
                    y(base + v),
                    bar * 0.95,
                    y(base) - y(base + v),
                );
                base += v;
            }
        }
        let lx = gx + group * 0.4;
        let ly = top + height + 12.0;
        let _ = writeln!(
            svg,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" \
             transform=\"rotate(-35 {lx:.1} {ly:.1})\">{name}</text>"
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"black\"/>",
        left + width,
        b = top + height
    );
    for (b, conns) in series.iter().enumerate() {
        let lx = left + 10.0 + 90.0 * b as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{conns} conns</text>",
            COLOURS[b % COLOURS.len()][0],
            lx + 14.0,
            y0 + H - 12.0,
            ly = y0 + H - 21.0,
        );
    }
}

/// A round axis step near `raw`: 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    magnitude
        * if m <= 1.0 {
            1.0
        } else if m <= 2.0 {
            2.0
        } else if m <= 5.0 {
            5.0
        } else {
            10.0
        }
}

/// An axis label: `12k` for 12000, `0.5` for 0.5.
fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

/// `(1.23×)`: `value / base`, or `(–)` without a base.
fn ratio(value: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("({:.2}×)", value / b),
        _ => "(–)".into(),
    }
}

/// A latency in µs, printed like wrk: `680 µs`, `1.52 ms`, `1.20 s`.
fn duration(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(7300.0), 10_000.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(0.04), 0.05);
    }

    fn sample(p50_us: Option<f64>) -> Sample {
        Sample {
            load: LoadResult {
                rps: 1000.0,
                requests: 1000,
                p50_us,
                p99_us: p50_us.map(|p| p * 3.0),
                p999_us: p50_us.map(|p| p * 6.0),
                mean_us: 600.0,
                max_us: 9000.0,
                errors: 0,
            },
            user_us: 10.0,
            system_us: 5.0,
        }
    }

    fn row(name: &str, protocol: Protocol) -> Row {
        Row {
            name: name.into(),
            protocol,
            unsupported: None,
        }
    }

    #[test]
    fn table_has_a_row_per_target_and_concurrency() {
        let mut r = Results::new(
            vec![row("a", Protocol::Http), row("b", Protocol::Http)],
            vec![32, 256],
            10,
        );
        for t in &mut r.samples {
            for c in t {
                c.push(sample(Some(500.0)));
            }
        }
        let table = r.table();
        assert_eq!(table.lines().count(), 2 + 1 + 4, "{table}");
        assert!(table.contains("| **http/1.1** |"));
        assert!(
            table.contains("| b | 256 | 1000 (1.00×) | 500 µs (1.00×) | 1.50 ms"),
            "{table}"
        );
        assert!(r.svg().starts_with("<svg"));
    }

    #[test]
    fn table_groups_rows_by_protocol() {
        let mut unsupported = row("rr", Protocol::Https);
        unsupported.unsupported = Some("not supported by this build".into());
        let mut r = Results::new(
            vec![
                row("a", Protocol::Http),
                row("a", Protocol::Https),
                unsupported,
                row("a", Protocol::H2c),
                row("b", Protocol::H2c),
            ],
            vec![32],
            10,
        );
        r.samples[0][0].push(sample(Some(500.0)));
        r.samples[1][0].push(sample(Some(1000.0)));
        r.samples[3][0].push(sample(None));
        let mut slower = sample(None);
        slower.load.rps = 500.0;
        r.samples[4][0].push(slower);
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 3 + 5, "{table}");
        assert!(lines[2].starts_with("| **http/1.1** |"));
        assert!(lines[4].starts_with("| **https (TLS termination)** |"));
        // Each group's first row is its own baseline.
        assert!(
            lines[5].starts_with("| a | 32 | 1000 (1.00×) | 1.00 ms (1.00×) |"),
            "{table}"
        );
        assert!(
            lines[6].starts_with("| rr | 32 | not supported by this build | – |"),
            "{table}"
        );
        assert_eq!(lines[6].matches('|').count(), lines[1].matches('|').count());
        assert_eq!(lines[2].matches('|').count(), lines[1].matches('|').count());
        assert!(lines[7].starts_with("| **h2c** |"));
        assert!(
            lines[9].starts_with("| b | 32×10 | 500 (0.50×) | – | – | – | 600 µs (1.00×) |"),
            "{table}"
        );
        let svg = r.svg();
        assert_eq!(svg.matches("requests/s").count(), 3);
    }
}
