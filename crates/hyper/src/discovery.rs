//! Service discovery: a task that asks a source (DNS, Kubernetes, Consul, ...) for the
//! servers of a pool on a timer and applies the difference to the pool, touching only
//! the servers it added itself.

use core::future::Future;
use core::time::Duration;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use roundrobin_core::ServerUrl;
use tokio::task::JoinHandle;

use crate::{BoxError, Manage};

#[cfg(feature = "dns")]
pub use dns::DnsDiscovery;

/// The default time between two resolutions (`--dns-refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// The shortest time between two resolutions that a short TTL may ask for (a TTL of 0
/// would otherwise resolve in a loop); a `refresh` shorter than this still applies.
pub const MIN_TTL_REFRESH: Duration = Duration::from_secs(1);

/// The longest wait before trying again after a failed resolution.
pub const FAILURE_RETRY: Duration = Duration::from_secs(5);

/// What a [`Discovery`] found: the servers with their weights, and optionally how long
/// the answer is valid (a DNS record's TTL), which shortens the wait before the next
/// resolution when it is shorter than the refresh period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// The servers and their weights; an empty list removes every server this
    /// discovery added.
    pub servers: Vec<(ServerUrl, u32)>,
    /// How long the answer is valid; `None` when the source does not say.
    pub ttl: Option<Duration>,
}

impl From<Vec<(ServerUrl, u32)>> for Discovered {
    fn from(servers: Vec<(ServerUrl, u32)>) -> Self {
        Self { servers, ttl: None }
    }
}

/// A source of servers: DNS (`DnsDiscovery`, feature `dns`), or your own (Kubernetes
/// EndpointSlices, Consul, a file...). [`spawn_discovery`] calls
/// [`resolve`](Self::resolve) every refresh period and makes the pool follow the
/// answer.
///
/// - `Ok` is the complete current set: servers missing from it are removed from the
///   pool (only those this discovery added), new ones are added, changed weights are
///   applied. An empty `Ok` removes all of them: return an error instead when the
///   source could not be read.
/// - `Err` keeps the pool as it is (the last good set) and is logged; the driver tries
///   again after at most [`FAILURE_RETRY`].
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use roundrobin_core::{RoundRobin, ServerUrl};
/// use roundrobin_hyper::{spawn_discovery, BoxError, Discovered, Discovery};
///
/// /// Servers listed in a file, one `URL WEIGHT` a line.
/// struct FileDiscovery(std::path::PathBuf);
///
/// impl Discovery for FileDiscovery {
///     async fn resolve(&self) -> Result<Discovered, BoxError> {
///         let path = self.0.clone();
///         let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await??;
///         let mut servers = Vec::new();
///         for line in text.lines().filter(|l| !l.trim().is_empty()) {
///             let (url, weight) = line.split_once(' ').ok_or("expected `URL WEIGHT`")?;
///             servers.push((ServerUrl::parse(url)?, weight.trim().parse()?));
///         }
///         Ok(servers.into())
///     }
/// }
///
/// # async fn run() {
/// let pool = Arc::new(RoundRobin::<ServerUrl>::new());
/// let task = spawn_discovery(
///     FileDiscovery("servers.txt".into()),
///     Arc::clone(&pool),
///     Duration::from_secs(10),
/// );
/// // ... serve with `pool` ...
/// task.abort(); // the servers it added stay in the pool
/// # }
/// ```
pub trait Discovery: Send + Sync + 'static {
    /// The current set of servers, or why it could not be read.
    fn resolve(&self) -> impl Future<Output = Result<Discovered, BoxError>> + Send;
}

/// Runs a [`Discovery`] on `pool` in the background: resolves at once, then every
/// `refresh` (or sooner when the answer's TTL is shorter, but not more often than
/// [`MIN_TTL_REFRESH`] because of it). Stops when the handle is aborted or the runtime
/// ends; the servers it added stay in the pool. See [`DiscoveryDriver`] to await the
/// first resolution before serving.
pub fn spawn_discovery<D: Discovery, P: Manage>(
    discovery: D,
    pool: Arc<P>,
    refresh: Duration,
) -> JoinHandle<()> {
    DiscoveryDriver::new(discovery, pool, refresh).spawn()
}

/// Applies what a [`Discovery`] finds to a pool, one [`refresh`](Self::refresh) at a
/// time, remembering which servers it added.
///
/// It owns the servers it added, and only those: a server that was already in the
/// pool when the discovery first found it (a statically configured one, or one added
/// through the admin API) is left alone, neither re-weighted nor removed. A server it
/// owns that someone removed from the pool is added back at the next refresh that
/// still finds it. Weights are only upserted when new or changed, so a rebalancer's
/// state for a server that stays is not reset at every refresh.
#[derive(Debug)]
pub struct DiscoveryDriver<D, P> {
    discovery: D,
    pool: Arc<P>,
    refresh: Duration,
    owned: HashMap<ServerUrl, u32>,
    wait: Option<Duration>,
}

impl<D: Discovery, P: Manage> DiscoveryDriver<D, P> {
    /// A driver that has not resolved yet; `refresh` is the longest time between two
    /// resolutions (at least 10 ms).
    pub fn new(discovery: D, pool: Arc<P>, refresh: Duration) -> Self {
        Self {
            discovery,
            pool,
            refresh: refresh.max(Duration::from_millis(10)),
            owned: HashMap::new(),
            wait: None,
        }
    }

    /// The servers this driver added and still owns, with their weights.
    pub fn owned(&self) -> impl Iterator<Item = (&ServerUrl, u32)> {
        self.owned.iter().map(|(s, w)| (s, *w))
    }

    /// Resolves once and applies the answer to the pool; returns the time to wait
    /// before the next resolution. On an error the pool is unchanged.
    pub async fn refresh(&mut self) -> Result<Duration, BoxError> {
        match self.discovery.resolve().await {
            Ok(found) => {
                self.apply(found.servers);
                let wait = match found.ttl {
                    Some(ttl) => self.refresh.min(ttl.max(MIN_TTL_REFRESH)),
                    None => self.refresh,
                };
                self.wait = Some(wait);
                Ok(wait)
            }
            Err(e) => {
                self.wait = Some(self.refresh.min(FAILURE_RETRY));
                Err(e)
            }
        }
    }

    /// Refreshes forever. A failure is logged with `tracing::warn!` when it starts or
    /// its message changes (repeats of the same one at `debug`, so a source that stays
    /// down does not flood the log), and the recovery with `info!`. When a refresh
    /// already ran, waits the time it asked for first.
    pub async fn run(mut self) {
        let mut failing: Option<String> = None;
        loop {
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            match self.refresh().await {
                Ok(_) => {
                    if failing.take().is_some() {
                        tracing::info!(servers = self.owned.len(), "service discovery recovered");
                    }
                }
                Err(e) => {
                    let error = e.to_string();
                    let kept = self.owned.len();
                    if failing.as_ref() == Some(&error) {
                        tracing::debug!(%error, kept, "service discovery still failing");
                    } else {
                        tracing::warn!(
                            %error,
                            kept,
                            "service discovery failed; keeping the last servers found"
                        );
                        failing = Some(error);
                    }
                }
            }
        }
    }

    /// [`run`](Self::run) on the current tokio runtime.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    fn apply(&mut self, found: Vec<(ServerUrl, u32)>) {
        let in_pool: HashSet<ServerUrl> =
            self.pool.snapshot().into_iter().map(|s| s.server).collect();
        let mut next = HashMap::with_capacity(found.len());
        for (server, weight) in found {
            let owned = self.owned.get(&server).copied();
            if owned.is_none() && in_pool.contains(&server) {
                // Someone else's (static or admin): leave it alone.
                continue;
            }
            if owned == Some(weight) && in_pool.contains(&server) {
                next.insert(server, weight);
                continue;
            }
            match self.pool.upsert_server(server.clone(), Some(weight)) {
                Ok(applied) => {
                    if owned.is_some() && in_pool.contains(&server) {
                        tracing::info!(%server, weight = applied, "discovered server re-weighted");
                    } else {
                        tracing::info!(%server, weight = applied, "discovered server added");
                    }
                    next.insert(server, weight);
                }
                Err(e) => {
                    tracing::warn!(%server, weight, error = %e, "cannot upsert a discovered server");
                    // Still ours if it was: a refused change must not remove it below.
                    if let Some(before) = owned {
                        next.insert(server, before);
                    }
                }
            }
        }
        for server in self.owned.keys() {
            if !next.contains_key(server) && in_pool.contains(server) {
                match self.pool.remove_server(server) {
                    Ok(()) => tracing::info!(%server, "discovered server removed"),
                    Err(e) => {
                        tracing::warn!(%server, error = %e, "cannot remove a discovered server");
                    }
                }
            }
        }
        self.owned = next;
    }
}

/// Whether a server URL names its host (`http://api.internal:8080`) rather than
/// giving an IP address (`http://10.0.0.7:8080`, `http://[::1]`): the servers that
/// `DnsDiscovery` can resolve.
pub fn names_a_host(server: &ServerUrl) -> bool {
    let (host, _) = split_authority(server.authority());
    !host.starts_with('[') && host.parse::<core::net::Ipv4Addr>().is_err()
}

/// Whether a server is one to expand by DNS (as `DnsDiscovery` does: one server per
/// address): it [names a host](names_a_host) and is not `https://`. An `https://`
/// server's name is what its certificate is checked against and what SNI sends, so it
/// stays one server, resolved by the [`Connector`](crate::Connector) when it connects.
///
/// ```
/// use roundrobin_core::ServerUrl;
/// use roundrobin_hyper::expands_by_dns;
/// let url = |s| ServerUrl::parse(s).unwrap();
/// assert!(expands_by_dns(&url("http://api.internal:8080")));
/// assert!(expands_by_dns(&url("h2c://grpc.internal:50051")));
/// assert!(!expands_by_dns(&url("https://api.internal")));
/// assert!(!expands_by_dns(&url("http://10.0.0.7:8080")));
/// ```
pub fn expands_by_dns(server: &ServerUrl) -> bool {
    names_a_host(server) && server.scheme() != "https"
}

/// `host[:port]` → (`host`, `:port` or empty); the host keeps its brackets.
fn split_authority(authority: &str) -> (&str, &str) {
    let colon = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.find(':')
    };
    match colon {
        Some(i) => authority.split_at(i),
        None => (authority, ""),
    }
}

#[cfg(feature = "dns")]
mod dns {
    use core::net::{IpAddr, SocketAddr};
    use core::time::Duration;
    use std::sync::OnceLock;
    use std::time::Instant;

    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::TokioResolver;
    use roundrobin_core::ServerUrl;

    use super::{split_authority, Discovered, Discovery};
    use crate::BoxError;

    /// DNS service discovery (nginx's `server ... resolve`, HAProxy's
    /// `server-template` with a `resolvers` section): a server given by name,
    /// `http://api.internal:8080/prefix`, stands for one server per address the name
    /// resolves to, `http://10.0.0.7:8080/prefix`, `http://[fd00::7]:8080/prefix` (same
    /// scheme, port and path).
    ///
    /// **Weight**: every address gets the weight given for the name, as nginx does
    /// for the servers of a resolved name: a name with three addresses and weight 2
    /// weighs 6 against a static server of weight 2. Requests are spread evenly over
    /// the addresses, which is what a DNS record set means.
    ///
    /// Addresses come from `A` records, or `AAAA` records when the name has no `A`
    /// record (hickory's `Ipv4thenIpv6`); the answer's TTL is returned so the driver
    /// resolves again when it expires. Each resolution asks the DNS server again (the
    /// resolver's cache is cleared first). No record, NXDOMAIN, a timeout or a server
    /// failure is an error: the driver keeps the last good set.
    ///
    /// The servers it adds name their address, not the host: an `https://` server
    /// found this way would be checked against a certificate for its IP address and
    /// sent that as SNI. Leave `https://` names to the [`Connector`](crate::Connector),
    /// which resolves them when it connects: [`expands_by_dns`](crate::expands_by_dns) says which servers to
    /// give this (the proxy binary asks it).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use roundrobin_core::{RoundRobin, ServerUrl};
    /// use roundrobin_hyper::{spawn_discovery, DnsDiscovery};
    ///
    /// let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    /// let dns = DnsDiscovery::new("http://api.internal:8080", 1)?
    ///     .resolver("10.0.0.2:53".parse()?); // default: the system's resolvers
    /// let task = spawn_discovery(dns, Arc::clone(&pool), Duration::from_secs(30));
    /// # task.abort();
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct DnsDiscovery {
        name: String,
        scheme: String,
        port: String,
        path: String,
        weight: u32,
        server: Option<SocketAddr>,
        timeout: Duration,
        resolver: OnceLock<TokioResolver>,
    }

    impl DnsDiscovery {
        /// Discovery of the addresses of the host of `url`
        /// (`http(s)://name[:port][/path]`), each with `weight`. An IP address as the
        /// host is accepted and resolves to itself.
        pub fn new(url: &str, weight: u32) -> Result<Self, roundrobin_core::Error> {
            Ok(Self::from_server(&ServerUrl::parse(url)?, weight))
        }

        /// [`new`](Self::new) from a parsed URL.
        pub fn from_server(url: &ServerUrl, weight: u32) -> Self {
            let (host, port) = split_authority(url.authority());
            let name = host.trim_start_matches('[').trim_end_matches(']');
            Self {
                name: name.to_owned(),
                scheme: url.scheme().to_owned(),
                port: port.to_owned(),
                path: url.path().to_owned(),
                weight,
                server: None,
                timeout: Duration::from_secs(2),
                resolver: OnceLock::new(),
            }
        }

        /// Asks this DNS server (UDP, then TCP for truncated answers) instead of the
        /// system's (`/etc/resolv.conf`).
        #[must_use]
        pub fn resolver(mut self, server: SocketAddr) -> Self {
            self.server = Some(server);
            self.resolver = OnceLock::new();
            self
        }

        /// How long one query may take (default 2 s; the resolver tries twice).
        #[must_use]
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self.resolver = OnceLock::new();
            self
        }

        /// The name resolved.
        pub fn name(&self) -> &str {
            &self.name
        }

        fn build(&self) -> Result<TokioResolver, BoxError> {
            let provider = TokioConnectionProvider::default();
            let mut builder = match self.server {
                Some(server) => {
                    let servers =
                        NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], servers),
                        provider,
                    )
                }
                None => TokioResolver::builder(provider)?,
            };
            let options = builder.options_mut();
            options.timeout = self.timeout;
            options.attempts = 2;
            Ok(builder.build())
        }

        pub(super) fn server_url(&self, ip: IpAddr) -> Result<ServerUrl, roundrobin_core::Error> {
            let host = match ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            ServerUrl::parse(&format!(
                "{}://{host}{}{}",
                self.scheme, self.port, self.path
            ))
        }
    }

    impl Discovery for DnsDiscovery {
        async fn resolve(&self) -> Result<Discovered, BoxError> {
            let resolver = match self.resolver.get() {
                Some(resolver) => resolver,
                None => {
                    let built = self.build()?;
                    self.resolver.get_or_init(|| built)
                }
            };
            // Ask the server every time: the driver decides when to resolve.
            resolver.clear_cache();
            let lookup = resolver
                .lookup_ip(self.name.as_str())
                .await
                .map_err(|e| format!("resolving {}: {e}", self.name))?;
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(Instant::now());
            let mut servers = Vec::new();
            for ip in lookup.iter() {
                let server = self.server_url(ip)?;
                if !servers.iter().any(|(s, _)| *s == server) {
                    servers.push((server, self.weight));
                }
            }
            if servers.is_empty() {
                return Err(format!("resolving {}: no address", self.name).into());
            }
            Ok(Discovered {
                servers,
                ttl: Some(ttl),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ServerUrl {
        ServerUrl::parse(s).unwrap()
    }

    #[test]
    fn names_a_host_only_for_names() {
        assert!(names_a_host(&url("http://api.internal:8080")));
        assert!(names_a_host(&url("http://localhost")));
        assert!(!names_a_host(&url("http://10.0.0.7:8080/x")));
        assert!(!names_a_host(&url("http://[::1]:80")));
        assert!(!names_a_host(&url("https://[fd00::1]")));
    }

    #[test]
    fn split_authority_keeps_brackets() {
        assert_eq!(split_authority("a.b:80"), ("a.b", ":80"));
        assert_eq!(split_authority("a.b"), ("a.b", ""));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", ":80"));
        assert_eq!(split_authority("[::1]"), ("[::1]", ""));
    }

    #[cfg(feature = "dns")]
    #[test]
    fn dns_urls_keep_scheme_port_and_path() {
        let dns = DnsDiscovery::new("https://Api.Internal:8443/v1", 3).unwrap();
        assert_eq!(dns.name(), "api.internal");
        let v4 = dns.server_url("10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(v4.as_str(), "https://10.0.0.7:8443/v1");
        let v6 = dns.server_url("fd00::7".parse().unwrap()).unwrap();
        assert_eq!(v6.as_str(), "https://[fd00::7]:8443/v1");
        let bare = DnsDiscovery::new("http://svc", 1).unwrap();
        let ip = bare.server_url("127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(ip.as_str(), "http://127.0.0.2");
    }
}
