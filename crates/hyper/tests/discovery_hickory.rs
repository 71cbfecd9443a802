//! DNS discovery against a real DNS server: `hickory-server` in the test, with an
//! in-memory zone `test.` whose records the test changes while the server runs.

#![cfg(feature = "dns")]

use core::net::SocketAddr;
use core::time::Duration;
use std::sync::Arc;

use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{DiscoveryDriver, DnsDiscovery, Manage};
use tokio::net::UdpSocket;

/// A hickory DNS server on 127.0.0.1 (UDP) serving the zone `test.`; it stops when
/// dropped.
struct Zone {
    addr: SocketAddr,
    authority: Arc<InMemoryAuthority>,
    serial: u32,
    _server: ServerFuture<Catalog>,
}

impl Zone {
    async fn start() -> Self {
        let origin = Name::from_ascii("test.").unwrap();
        let authority = Arc::new(InMemoryAuthority::empty(
            origin.clone(),
            ZoneType::Primary,
            false,
        ));
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            1,
        );
        assert!(
            authority
                .upsert(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1)
                .await
        );
        let mut catalog = Catalog::new();
        let object: Arc<dyn AuthorityObject> = Arc::clone(&authority) as _;
        catalog.upsert(LowerName::new(&origin), vec![object]);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = ServerFuture::new(catalog);
        server.register_socket(socket);
        Self {
            addr,
            authority,
            serial: 1,
            _server: server,
        }
    }

    /// Replaces the `A` records of `name` with 127.0.0.`o` for each `o`; none removes
    /// the name (NXDOMAIN).
    async fn set_a(&mut self, name: &str, last_octets: &[u8]) {
        self.serial += 1;
        let name = Name::from_ascii(name).unwrap();
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        self.authority.records_mut().await.remove(&key);
        for &o in last_octets {
            let record = Record::from_rdata(name.clone(), 300, RData::A(A::new(127, 0, 0, o)));
            assert!(self.authority.upsert(record, self.serial).await);
        }
    }
}

fn servers(pool: &RoundRobin<ServerUrl>) -> Vec<String> {
    let mut all: Vec<_> = pool
        .weights()
        .into_iter()
        .map(|(s, w)| format!("{s}={w}"))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_pool_follows_a_hickory_zone() {
    let mut zone = Zone::start().await;
    zone.set_a("svc.test.", &[2, 3]).await;
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    pool.upsert_server(ServerUrl::parse("http://127.0.0.1:9").unwrap(), Some(4))
        .unwrap();
    let dns = DnsDiscovery::new("http://svc.test:8080/p", 3)
        .unwrap()
        .resolver(zone.addr)
        .timeout(Duration::from_millis(500));
    let mut driver = DiscoveryDriver::new(dns, Arc::clone(&pool), Duration::from_secs(60));

    let wait = driver.refresh().await.unwrap();
    assert_eq!(wait, Duration::from_secs(60)); // TTL 300 is longer
    assert_eq!(
        servers(&pool),
        [
            "http://127.0.0.1:9=4",
            "http://127.0.0.2:8080/p=3",
            "http://127.0.0.3:8080/p=3"
        ]
    );

    zone.set_a("svc.test.", &[3, 4]).await;
    driver.refresh().await.unwrap();
    let followed = [
        "http://127.0.0.1:9=4",
        "http://127.0.0.3:8080/p=3",
        "http://127.0.0.4:8080/p=3",
    ];
    assert_eq!(servers(&pool), followed);

    // the name removed from the zone: NXDOMAIN (with the zone's SOA), the set stays
    zone.set_a("svc.test.", &[]).await;
    assert!(driver.refresh().await.is_err());
    assert_eq!(servers(&pool), followed);

    zone.set_a("svc.test.", &[5]).await;
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        ["http://127.0.0.1:9=4", "http://127.0.0.5:8080/p=3"]
    );
}

#[tokio::test]
async fn a_name_with_only_aaaa_records_gives_bracketed_ipv6_servers() {
    let zone = Zone::start().await;
    let name = Name::from_ascii("v6.test.").unwrap();
    for ip in ["::1", "fd00::7"] {
        let rdata = RData::AAAA(AAAA(ip.parse().unwrap()));
        let record = Record::from_rdata(name.clone(), 300, rdata);
        assert!(zone.authority.upsert(record, 2).await);
    }
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    let dns = DnsDiscovery::new("https://v6.test:8443", 1)
        .unwrap()
        .resolver(zone.addr)
        .timeout(Duration::from_millis(500));
    let mut driver = DiscoveryDriver::new(dns, Arc::clone(&pool), Duration::from_secs(60));
    driver.refresh().await.unwrap();
    assert_eq!(
        servers(&pool),
        ["https://[::1]:8443=1", "https://[fd00::7]:8443=1"]
    );
}
