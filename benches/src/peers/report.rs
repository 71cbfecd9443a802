//! The results: medians over rounds, the markdown table and the SVG chart.

use core::fmt::Write as _;

use super::wrk::WrkResult;

/// One wrk run of one target and the balancer's CPU time during it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// What wrk reported.
    pub(crate) wrk: WrkResult,
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

/// Medians over the rounds of one target at one concurrency.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) user_us: f64,
    pub(crate) system_us: f64,
    pub(crate) total_us: f64,
    /// Errors summed over the rounds (not a median).
    pub(crate) errors: u64,
}

impl Summary {
    /// The median of each figure over `samples` (each figure on its own).
    pub(crate) fn of(samples: &[Sample]) -> Self {
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Self {
            rps: m(|s| s.wrk.rps),
            p50_us: m(|s| s.wrk.p50_us),
            p99_us: m(|s| s.wrk.p99_us),
            p999_us: m(|s| s.wrk.p999_us),
            user_us: m(|s| s.user_us),
            system_us: m(|s| s.system_us),
            total_us: m(|s| s.user_us + s.system_us),
            errors: samples.iter().map(|s| s.wrk.errors).sum(),
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

/// Everything measured: `samples[target][concurrency]` holds one sample per round.
#[derive(Debug)]
pub(crate) struct Results {
    /// Row names; the first is the baseline of the ratios.
    pub(crate) targets: Vec<String>,
    /// The wrk connection counts.
    pub(crate) concurrencies: Vec<u32>,
    /// One sample per round, per target and concurrency.
    pub(crate) samples: Vec<Vec<Vec<Sample>>>,
    /// Memory per target, if measured.
    pub(crate) memory: Vec<Option<Memory>>,
}

impl Results {
    /// Empty results for `targets` × `concurrencies`.
    pub(crate) fn new(targets: Vec<String>, concurrencies: Vec<u32>) -> Self {
        let samples = vec![vec![Vec::new(); concurrencies.len()]; targets.len()];
        let memory = vec![None; targets.len()];
        Self {
            targets,
            concurrencies,
            samples,
            memory,
        }
    }

    fn summary(&self, target: usize, concurrency: usize) -> Summary {
        Summary::of(&self.samples[target][concurrency])
    }

    /// The markdown table: per concurrency, one row per target; every figure a median
    /// over rounds and a ratio to the first target at the same concurrency.
    pub(crate) fn table(&self) -> String {
        let mut t = String::from(
            "| target | conns | req/s | p50 | p99 | p99.9 | CPU user µs/req | CPU sys µs/req \
             | CPU total µs/req | KiB per idle conn |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let base_mem = self.memory[0].as_ref().and_then(Memory::kib_per_connection);
        for (c, conns) in self.concurrencies.iter().enumerate() {
            let base = self.summary(0, c);
            for (i, name) in self.targets.iter().enumerate() {
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
                let _ = writeln!(
                    t,
                    "| {name}{errors} | {conns} | {:.0} {} | {} {} | {} {} | {} {} | {:.1} {} | {:.1} {} | {:.1} {} | {memory} |",
                    s.rps,
                    ratio(s.rps, Some(base.rps)),
                    duration(s.p50_us),
                    ratio(s.p50_us, Some(base.p50_us)),
                    duration(s.p99_us),
                    ratio(s.p99_us, Some(base.p99_us)),
                    duration(s.p999_us),
                    ratio(s.p999_us, Some(base.p999_us)),
                    s.user_us,
                    ratio(s.user_us, Some(base.user_us)),
                    s.system_us,
                    ratio(s.system_us, Some(base.system_us)),
                    s.total_us,
                    ratio(s.total_us, Some(base.total_us)),
                );
            }
        }
        t
    }

    /// The requests/s of every round, to show the spread behind the medians.
    pub(crate) fn rounds(&self) -> String {
        let mut t = String::new();
        for (c, conns) in self.concurrencies.iter().enumerate() {
            for (i, name) in self.targets.iter().enumerate() {
                let rounds: Vec<String> = self.samples[i][c]
                    .iter()
                    .map(|s| format!("{:.0}", s.wrk.rps))
                    .collect();
                let _ = writeln!(t, "- {name}, {conns} conns: {}", rounds.join(", "));
            }
        }
        t
    }

    /// The idle-connection RSS figures behind the last column.
    pub(crate) fn memory_notes(&self) -> String {
        let mut t = String::new();
        for (name, m) in self.targets.iter().zip(&self.memory) {
            if let Some(m) = m {
                let _ = write!(
                    t,
                    "- {name}: RSS {} KiB idle, {} KiB with {} connections",
                    m.idle_kib, m.loaded_kib, m.connections
                );
                if let Some(e) = &m.error {
                    let _ = write!(t, " (stopped: {e})");
                }
                t.push('\n');
            }
        }
        t
    }

    /// An SVG chart: req/s, CPU µs per request (user and system stacked) and KiB per
    /// idle connection, one bar per target and concurrency. Plain SVG text, no fonts
    /// needed to write it.
    pub(crate) fn svg(&self) -> String {
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{H}\" \
             viewBox=\"0 0 {w} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            w = PANEL_W * 3.0
        );
        let n = self.concurrencies.len();
        let bars = |f: &dyn Fn(Summary) -> Vec<f64>| -> Vec<Vec<Vec<f64>>> {
            (0..self.targets.len())
                .map(|i| (0..n).map(|c| f(self.summary(i, c))).collect())
                .collect()
        };
        panel(
            &mut svg,
            0.0,
            "requests/s (higher is better)",
            &self.targets,
            &self.concurrencies,
            &bars(&|s| vec![s.rps]),
        );
        panel(
            &mut svg,
            PANEL_W,
            "CPU µs per request: user (dark) + system (light)",
            &self.targets,
            &self.concurrencies,
            &bars(&|s| vec![s.user_us, s.system_us]),
        );
        let memory: Vec<Vec<Vec<f64>>> = self
            .memory
            .iter()
            .map(|m| {
                let k = m
                    .as_ref()
                    .and_then(Memory::kib_per_connection)
                    .unwrap_or(0.0);
                vec![vec![k.max(0.0)]]
            })
            .collect();
        panel(
            &mut svg,
            2.0 * PANEL_W,
            "KiB RSS per idle keep-alive connection",
            &self.targets,
            &[],
            &memory,
        );
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

/// One panel at `x`: per target a group of bars (one per series), each bar a stack.
fn panel(
    svg: &mut String,
    x: f64,
    title: &str,
    targets: &[String],
    series: &[u32],
    values: &[Vec<Vec<f64>>],
) {
    let (left, top, width, height) = (x + 50.0, 40.0, 330.0, 250.0);
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
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
        left + width / 2.0
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
            H - 12.0,
            ly = H - 21.0,
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

    #[test]
    fn table_has_a_row_per_target_and_concurrency() {
        let wrk = WrkResult {
            rps: 1000.0,
            requests: 1000,
            p50_us: 500.0,
            p99_us: 1500.0,
            p999_us: 3000.0,
            errors: 0,
        };
        let mut r = Results::new(vec!["a".into(), "b".into()], vec![32, 256]);
        for t in &mut r.samples {
            for c in t {
                c.push(Sample {
                    wrk,
                    user_us: 10.0,
                    system_us: 5.0,
                });
            }
        }
        let table = r.table();
        assert_eq!(table.lines().count(), 2 + 4);
        assert!(table.contains("| b | 256 | 1000 (1.00×) | 500 µs (1.00×) | 1.50 ms"));
        assert!(r.svg().starts_with("<svg"));
    }
}
