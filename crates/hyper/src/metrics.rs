//! Prometheus metrics: counted lock-free and without allocating on the request path,
//! encoded in the OpenMetrics text format (with `prometheus-client`) at scrape time.

use core::fmt;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use core::time::Duration;
use std::collections::HashMap;

use crate::fnv::FnvBuild;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use roundrobin_core::ServerUrl;

use crate::{Error, Health, Manage};

/// Upper bounds of the latency histogram's buckets, in seconds (Prometheus' defaults,
/// from 1 ms).
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const KINDS: [&str; 4] = ["connect", "timeout", "upstream", "client_closed"];

/// One server's counters.
#[derive(Debug, Default)]
pub(crate) struct ServerMetrics {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    in_flight: AtomicI64,
    retries: AtomicU64,
    tunnels: AtomicI64,
}

impl ServerMetrics {
    pub(crate) fn response(&self, status: u16, latency: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, error: &Error) {
        let kind = match error {
            Error::Connect(_) => 0,
            Error::Timeout(_) | Error::TimedOut(_) => 1,
            e if e.is_client_error() => 3,
            _ => 2,
        };
        self.errors[kind].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight to a server; counted until dropped. A request dropped before
/// it was [`done`](Self::done) is counted as closed by the client.
#[derive(Debug)]
pub(crate) struct InFlight {
    server: Arc<ServerMetrics>,
    done: bool,
}

impl InFlight {
    pub(crate) fn metrics(&self) -> &ServerMetrics {
        &self.server
    }

    pub(crate) fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.server.errors[3].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The open-tunnel gauge of one server: the balancer puts it on an upgrade request (as
/// a request extension) for the forwarder, which counts the tunnel while it is open.
#[derive(Debug, Clone)]
pub(crate) struct TunnelGauge(Arc<ServerMetrics>);

impl TunnelGauge {
    /// A tunnel to the server opens; it counts until the guard is dropped.
    pub(crate) fn open(self) -> OpenTunnel {
        self.0.tunnels.fetch_add(1, Ordering::Relaxed);
        OpenTunnel(self.0)
    }
}

/// An open tunnel, counted until dropped.
#[derive(Debug)]
pub(crate) struct OpenTunnel(Arc<ServerMetrics>);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The proxy's metrics: per server (requests by status class, errors by kind, latency,
/// in flight, retries, open tunnels; weights, rating and health from the pool at
/// scrape time) and proxy-wide (open and accepted client connections, rests of
/// keep-alive connections, failed TLS handshakes, rebalancer steps).
///
/// Share one `Arc<Metrics>` between the balancer
/// ([`Builder::metrics`](crate::Builder::metrics)), the server
/// ([`ServerLimits::metrics`](crate::ServerLimits)) and the admin API
/// ([`Admin::metrics`](crate::Admin::metrics), `GET /metrics`). Recording is a hash
/// lookup and a few atomic additions: no lock, no allocation (except the first request
/// to a new server).
#[derive(Default)]
pub struct Metrics {
    servers: ArcSwap<HashMap<ServerUrl, Arc<ServerMetrics>, FnvBuild>>,
    adding: Mutex<()>,
    open: AtomicI64,
    accepted: AtomicU64,
    rests: AtomicU64,
    tls_handshake_failures: AtomicU64,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("servers", &self.servers.load().len())
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn server(&self, url: &ServerUrl) -> Arc<ServerMetrics> {
        if let Some(m) = self.servers.load().get(url) {
            return Arc::clone(m);
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.servers.load_full();
        if let Some(m) = current.get(url) {
            return Arc::clone(m);
        }
        let m = Arc::new(ServerMetrics::default());
        let mut next = (*current).clone();
        next.insert(url.clone(), Arc::clone(&m));
        self.servers.store(Arc::new(next));
        m
    }

    /// A request to `url` starts.
    pub(crate) fn start(&self, url: &ServerUrl) -> InFlight {
        let server = self.server(url);
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            server,
            done: false,
        }
    }

    /// The gauge of the tunnels open to `url`.
    pub(crate) fn tunnel_gauge(&self, url: &ServerUrl) -> TunnelGauge {
        TunnelGauge(self.server(url))
    }

    /// A client connection was accepted.
    pub(crate) fn connection_opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection closed.
    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A keep-alive client connection at rest handed back its HTTP state and buffers.
    pub(crate) fn connection_rested(&self) {
        self.rests.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's TLS handshake failed or timed out.
    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The OpenMetrics text of these metrics and of `pool`'s state.
    pub fn encode<P: Manage + ?Sized>(self: &Arc<Self>, pool: &P) -> String {
        let states: Vec<State> = pool
            .snapshot()
            .into_iter()
            .map(|s| State {
                health: pool.health(&s.server).unwrap_or(Health::Up),
                configured: s.original_weight,
                current: s.current_weight,
                rating: s.rating,
                url: s.server.as_str().to_owned(),
            })
            .collect();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            metrics: Arc::clone(self),
            states,
            steps: pool.steps(),
        }));
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &registry) {
            Ok(()) => out,
            Err(_) => String::from("# EOF\n"),
        }
    }
}

/// A server's state at scrape time.
#[derive(Debug)]
struct State {
    url: String,
    configured: u32,
    current: u32,
    rating: f64,
    health: Health,
}

#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    states: Vec<State>,
    steps: u64,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, f64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let guard = self.metrics.servers.load();
        let servers: &HashMap<ServerUrl, Arc<ServerMetrics>, FnvBuild> = &guard;
        let mut urls: Vec<&ServerUrl> = servers.keys().collect();
        urls.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let urls = &urls;
        let label = |url: &ServerUrl| ("server", url.as_str().to_owned());
        // One row per server and name of `names`, the value from `values`.
        let rows = move |key: &'static str,
                         names: &'static [&'static str],
                         values: fn(&ServerMetrics) -> &[AtomicU64]| {
            urls.iter().flat_map(move |url| {
                let m = &servers[*url];
                names.iter().zip(values(m)).map(move |(name, v)| {
                    (
                        vec![label(url), (key, (*name).to_owned())],
                        v.load(Ordering::Relaxed),
                    )
                })
            })
        };
        counter(
            &mut encoder,
            "roundrobin_server_requests",
            "Responses by server and status class (every try, retried ones included).",
            rows("code_class", &CLASSES, |m| &m.requests),
        )?;
        counter(
            &mut encoder,
            "roundrobin_server_errors",
            "Failed tries by server and kind: connect, timeout, upstream, client_closed.",
            rows("kind", &KINDS, |m| &m.errors),
        )?;
        counter(
            &mut encoder,
            "roundrobin_server_retries",
            "Tries that failed on the server and were sent to another one.",
            urls.iter().map(|url| {
                (
                    vec![label(url)],
                    servers[*url].retries.load(Ordering::Relaxed),
                )
            }),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_server_in_flight",
            "Requests in flight to the server.",
            urls.iter().map(|url| {
                let n = servers[*url].in_flight.load(Ordering::Relaxed);
                (vec![label(url)], n as f64)
            }),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_server_tunnels_open",
            "Upgraded connections (WebSocket and other protocols) open to the server.",
            urls.iter().map(|url| {
                let n = servers[*url].tunnels.load(Ordering::Relaxed);
                (vec![label(url)], n as f64)
            }),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "roundrobin_server_latency_seconds",
                "Time from the pick to the response head.",
                None,
                MetricType::Histogram,
            )?;
            for url in urls {
                let m = &servers[*url];
                let mut cumulative = 0;
                let buckets: Vec<(f64, u64)> = BUCKETS
                    .iter()
                    .zip(&m.buckets)
                    .map(|(&b, n)| {
                        cumulative += n.load(Ordering::Relaxed);
                        (b, cumulative)
                    })
                    .chain(core::iter::once((
                        f64::INFINITY,
                        m.latency_count.load(Ordering::Relaxed),
                    )))
                    .collect();
                let labels = vec![label(url)];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<Vec<(&str, String)>>(
                        m.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
                        m.latency_count.load(Ordering::Relaxed),
                        &buckets,
                        None,
                    )?;
            }
        }
        let weights = |pick: fn(&State) -> f64| {
            self.states
                .iter()
                .map(move |s| (vec![("server", s.url.clone())], pick(s)))
        };
        gauge(
            &mut encoder,
            "roundrobin_server_weight_configured",
            "The weight the server was configured with.",
            weights(|s| f64::from(s.configured)),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_server_weight",
            "The weight the balancer applies now (0 while ejected or down).",
            weights(|s| f64::from(s.current)),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_server_rating",
            "The rebalancer's rating of the server (0 is best).",
            weights(|s| s.rating),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_server_state",
            "1 for the server's state: up, slow-start, ejected or down.",
            self.states.iter().flat_map(|s| {
                [Health::Up, Health::SlowStart, Health::Ejected, Health::Down]
                    .into_iter()
                    .map(move |h| {
                        (
                            vec![("server", s.url.clone()), ("state", h.as_str().to_owned())],
                            if h == s.health { 1.0 } else { 0.0 },
                        )
                    })
            }),
        )?;
        gauge(
            &mut encoder,
            "roundrobin_client_connections_open",
            "Client connections open now.",
            core::iter::once((Vec::new(), self.metrics.open.load(Ordering::Relaxed) as f64)),
        )?;
        counter(
            &mut encoder,
            "roundrobin_client_connections_accepted",
            "Client connections accepted.",
            core::iter::once((Vec::new(), self.metrics.accepted.load(Ordering::Relaxed))),
        )?;
        counter(
            &mut encoder,
            "roundrobin_client_connection_rests",
            "Times a keep-alive client connection at rest handed back its HTTP state and buffers (it stays open).",
            core::iter::once((Vec::new(), self.metrics.rests.load(Ordering::Relaxed))),
        )?;
        counter(
            &mut encoder,
            "roundrobin_client_tls_handshake_failures",
            "TLS handshakes with clients that failed or timed out (their connections closed).",
            core::iter::once((
                Vec::new(),
                self.metrics.tls_handshake_failures.load(Ordering::Relaxed),
            )),
        )?;
        counter(
            &mut encoder,
            "roundrobin_rebalancer_steps",
            "Steps of the rebalancer that changed weights.",
            core::iter::once((Vec::new(), self.steps)),
        )?;
        Ok(())
    }
}
