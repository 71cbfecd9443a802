//! Service discovery against a DNS server run by the test (a minimal UDP responder on
//! 127.0.0.1 answering `A` queries from a map the test changes).

#![cfg(feature = "dns")]

use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{
    spawn_discovery, BoxError, Discovered, Discovery, DiscoveryDriver, DnsDiscovery, Manage,
    MIN_TTL_REFRESH,
};
use tokio::net::UdpSocket;

/// What the responder answers for a name.
#[derive(Debug, Clone)]
enum Answer {
    /// `A` records (NOERROR without records for other types).
    A(Vec<Ipv4Addr>),
    /// SERVFAIL.
    ServFail,
}

/// A DNS server on 127.0.0.1 (UDP): names absent from the map are NXDOMAIN.
struct Dns {
    addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Answer>>>,
    ttl: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dns {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(Mutex::new(HashMap::new()));
        let ttl = Arc::new(Mutex::new(300));
        let task = tokio::spawn({
            let (records, ttl) = (Arc::clone(&records), Arc::clone(&ttl));
            async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let records = records.lock().unwrap().clone();
                    let ttl = *ttl.lock().unwrap();
                    if let Some(reply) = answer(&buf[..n], &records, ttl) {
                        let _ = socket.send_to(&reply, peer).await;
                    }
                }
            }
        });
        Self {
            addr,
            records,
            ttl,
            task,
        }
    }

    fn set(&self, name: &str, answer: Answer) {
        self.records.lock().unwrap().insert(name.into(), answer);
    }

    fn set_a(&self, name: &str, last_octets: &[u8]) {
        let ips = last_octets
            .iter()
            .map(|&o| Ipv4Addr::new(127, 0, 0, o))
            .collect();
        self.set(name, Answer::A(ips));
    }

    fn remove(&self, name: &str) {
        self.records.lock().unwrap().remove(name);
    }

    fn set_ttl(&self, ttl: u32) {
        *self.ttl.lock().unwrap() = ttl;
    }
}

/// The reply to one query: the question echoed, then the answers (name compressed as
/// a pointer to the question).
fn answer(query: &[u8], records: &HashMap<String, Answer>, ttl: u32) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = &query[12..i + 4];
    let name = labels.join(".");
    let (rcode, ips) = match records.get(&name) {
        None => (3, vec![]),
        Some(Answer::ServFail) => (2, vec![]),
        Some(Answer::A(ips)) if qtype == 1 => (0, ips.clone()),
        Some(Answer::A(_)) => (0, vec![]),
    };
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[..2]); // id
    reply.push(0x80 | (query[2] & 0x79)); // QR, opcode, RD
    reply.push(0x80 | rcode); // RA, rcode
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&u16::try_from(ips.len()).unwrap().to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

fn url(s: &str) -> ServerUrl {
    ServerUrl::parse(s).unwrap()
}

/// The pool's servers and weights, sorted.
fn servers(pool: &RoundRobin<ServerUrl>) -> Vec<(String, u32)> {
    let mut all: Vec<_> = pool
        .weights()
        .into_iter()
        .map(|(s, w)| (s.as_str().to_owned(), w))
        .collect();
    all.sort();
    all
}

fn expect(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut all: Vec<_> = list.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect();
    all.sort();
    all
}

fn dns_discovery(dns: &Dns, url: &str, weight: u32) -> DnsDiscovery {
    DnsDiscovery::new(url, weight)
        .unwrap()
        .resolver(dns.addr)
        .timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn pool_follows_the_records_and_keeps_the_last_good_set() {
    let dns = Dns::start().await;
    dns.set_a("svc.test", &[2, 3]);
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    pool.upsert_server(url("http://127.0.0.1:9"), Some(5))
        .unwrap();
    let discovery = dns_discovery(&dns, "http://svc.test:8080/api", 2);
    let mut driver = DiscoveryDriver::new(discovery, Arc::clone(&pool), Duration::from_secs(60));

    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        expect(&[
            ("http://127.0.0.1:9", 5),
            ("http://127.0.0.2:8080/api", 2),
            ("http://127.0.0.3:8080/api", 2),
        ])
    );

    // a record added, one removed
    dns.set_a("svc.test", &[3, 4]);
    driver.refresh().await.unwrap();
    let followed = expect(&[
        ("http://127.0.0.1:9", 5),
        ("http://127.0.0.3:8080/api", 2),
        ("http://127.0.0.4:8080/api", 2),
    ]);
    assert_eq!(servers(&pool), followed);

    // NXDOMAIN, then SERVFAIL: errors, the last good set stays
    dns.remove("svc.test");
    assert!(driver.refresh().await.is_err());
    assert_eq!(servers(&pool), followed);
    dns.set("svc.test", Answer::ServFail);
    assert!(driver.refresh().await.is_err());
    assert_eq!(servers(&pool), followed);

    // back, with one address
    dns.set_a("svc.test", &[5]);
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        expect(&[("http://127.0.0.1:9", 5), ("http://127.0.0.5:8080/api", 2)])
    );
    assert_eq!(driver.owned().count(), 1);
}

#[tokio::test]
async fn static_servers_are_never_touched() {
    let dns = Dns::start().await;
    dns.set_a("svc.test", &[2, 3]);
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    // the same address as a discovered one, configured statically with its own weight
    pool.upsert_server(url("http://127.0.0.2:80"), Some(7))
        .unwrap();
    let discovery = dns_discovery(&dns, "http://svc.test:80", 1);
    let mut driver = DiscoveryDriver::new(discovery, Arc::clone(&pool), Duration::from_secs(60));
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        expect(&[("http://127.0.0.2:80", 7), ("http://127.0.0.3:80", 1)])
    );
    // the name no longer resolves to it: the static server stays, weight unchanged
    dns.set_a("svc.test", &[4]);
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        expect(&[("http://127.0.0.2:80", 7), ("http://127.0.0.4:80", 1)])
    );
    // a discovered server removed by someone else comes back at the next refresh
    pool.remove_server(&url("http://127.0.0.4:80")).unwrap();
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        expect(&[("http://127.0.0.2:80", 7), ("http://127.0.0.4:80", 1)])
    );
}

#[tokio::test]
async fn the_wait_is_the_refresh_or_the_shorter_ttl() {
    let dns = Dns::start().await;
    dns.set_a("svc.test", &[2]);
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    let discovery = dns_discovery(&dns, "http://svc.test", 1);
    let mut driver = DiscoveryDriver::new(discovery, Arc::clone(&pool), Duration::from_secs(60));
    assert_eq!(driver.refresh().await.unwrap(), Duration::from_secs(60));
    dns.set_ttl(10);
    let wait = driver.refresh().await.unwrap();
    assert!(
        wait <= Duration::from_secs(10) && wait >= Duration::from_secs(8),
        "{wait:?}"
    );
    dns.set_ttl(0);
    assert_eq!(driver.refresh().await.unwrap(), MIN_TTL_REFRESH);
}

/// Polls until the pool holds `want`, for at most 5 s.
async fn eventually(pool: &RoundRobin<ServerUrl>, want: &[(String, u32)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while servers(pool) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool {:?}, want {want:?}",
            servers(pool)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_spawned_task_follows_changes_every_refresh() {
    let dns = Dns::start().await;
    dns.set_a("svc.test", &[2, 3]);
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    let discovery = dns_discovery(&dns, "http://svc.test:81", 1);
    let task = spawn_discovery(discovery, Arc::clone(&pool), Duration::from_millis(100));
    eventually(
        &pool,
        &expect(&[("http://127.0.0.2:81", 1), ("http://127.0.0.3:81", 1)]),
    )
    .await;
    dns.set("svc.test", Answer::ServFail);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        servers(&pool),
        expect(&[("http://127.0.0.2:81", 1), ("http://127.0.0.3:81", 1)])
    );
    dns.set_a("svc.test", &[3, 6]);
    eventually(
        &pool,
        &expect(&[("http://127.0.0.3:81", 1), ("http://127.0.0.6:81", 1)]),
    )
    .await;
    task.abort();
}

#[tokio::test]
async fn a_short_ttl_refreshes_before_the_period() {
    let dns = Dns::start().await;
    dns.set_ttl(1);
    dns.set_a("svc.test", &[2]);
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    let discovery = dns_discovery(&dns, "http://svc.test:82", 1);
    let task = spawn_discovery(discovery, Arc::clone(&pool), Duration::from_secs(3600));
    eventually(&pool, &expect(&[("http://127.0.0.2:82", 1)])).await;
    dns.set_a("svc.test", &[3]);
    eventually(&pool, &expect(&[("http://127.0.0.3:82", 1)])).await;
    task.abort();
}

/// A discovery of your own: a list the test changes, or an error.
struct ListDiscovery(Arc<Mutex<Listed>>);

type Listed = Result<Vec<(ServerUrl, u32)>, String>;

impl Discovery for ListDiscovery {
    async fn resolve(&self) -> Result<Discovered, BoxError> {
        let list = self.0.lock().unwrap().clone();
        Ok(list?.into())
    }
}

#[tokio::test]
async fn a_custom_discovery_owns_only_what_it_added() {
    let list = Arc::new(Mutex::new(Ok(vec![
        (url("http://10.0.0.1:80"), 1),
        (url("http://10.0.0.2:80"), 2),
    ])));
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    pool.upsert_server(url("http://10.0.0.9:80"), Some(4))
        .unwrap();
    let mut driver = DiscoveryDriver::new(
        ListDiscovery(Arc::clone(&list)),
        Arc::clone(&pool),
        Duration::from_secs(60),
    );
    driver.refresh().await.unwrap();
    let all = expect(&[
        ("http://10.0.0.1:80", 1),
        ("http://10.0.0.2:80", 2),
        ("http://10.0.0.9:80", 4),
    ]);
    assert_eq!(servers(&pool), all);
    // a weight change is applied
    *list.lock().unwrap() = Ok(vec![
        (url("http://10.0.0.1:80"), 3),
        (url("http://10.0.0.2:80"), 2),
    ]);
    driver.refresh().await.unwrap();
    let all = expect(&[
        ("http://10.0.0.1:80", 3),
        ("http://10.0.0.2:80", 2),
        ("http://10.0.0.9:80", 4),
    ]);
    assert_eq!(servers(&pool), all);
    // an error keeps them
    *list.lock().unwrap() = Err("source down".into());
    assert!(driver.refresh().await.is_err());
    assert_eq!(servers(&pool), all);
    // an empty answer removes what it added, and nothing else
    *list.lock().unwrap() = Ok(vec![]);
    driver.refresh().await.unwrap();
    assert_eq!(servers(&pool), expect(&[("http://10.0.0.9:80", 4)]));
}

/// A pool that refuses weight 99.
struct Refusing(RoundRobin<ServerUrl>);

impl Manage for Refusing {
    fn upsert_server(
        &self,
        server: ServerUrl,
        weight: Option<u32>,
    ) -> Result<u32, roundrobin_hyper::Error> {
        if weight == Some(99) {
            return Err(roundrobin_core::Error::TooManyServers.into());
        }
        Manage::upsert_server(&self.0, server, weight)
    }
    fn remove_server(&self, server: &ServerUrl) -> Result<(), roundrobin_hyper::Error> {
        Manage::remove_server(&self.0, server)
    }
    fn snapshot(&self) -> Vec<roundrobin_hyper::ServerState<ServerUrl>> {
        Manage::snapshot(&self.0)
    }
}

#[tokio::test]
async fn a_refused_weight_change_keeps_the_server() {
    let list = Arc::new(Mutex::new(Ok(vec![(url("http://10.0.0.1:80"), 1)])));
    let pool = Arc::new(Refusing(RoundRobin::new()));
    let mut driver = DiscoveryDriver::new(
        ListDiscovery(Arc::clone(&list)),
        Arc::clone(&pool),
        Duration::from_secs(60),
    );
    driver.refresh().await.unwrap();
    *list.lock().unwrap() = Ok(vec![(url("http://10.0.0.1:80"), 99)]);
    driver.refresh().await.unwrap();
    assert_eq!(servers(&pool.0), expect(&[("http://10.0.0.1:80", 1)]));
    assert_eq!(driver.owned().count(), 1);
    // still owned: removed when it goes
    *list.lock().unwrap() = Ok(vec![]);
    driver.refresh().await.unwrap();
    assert_eq!(servers(&pool.0), expect(&[]));
}
