//! The dashboard in a real browser: headless Chromium loads `GET /` from an admin API on
//! 127.0.0.1, and the rendered page (after its scripts ran) shows every server and
//! follows a change of the pool.
//!
//! Needs Chromium (`/usr/bin/chromium`, or the path in `$CHROMIUM`): `apt-get install -y
//! chromium`; `cargo xtask ci` installs it. Without it this test fails rather than
//! skips. Every browser run is bounded (20 s) and killed with its process group.
#![cfg(all(feature = "admin", unix))]

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use roundrobin_core::{RoundRobin, ServerUrl};
use roundrobin_hyper::{spawn_on, Admin, Serving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest one browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(20);

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: this test needs Chromium; install it with `apt-get install -y chromium` \
         (`cargo xtask ci` does), or point $CHROMIUM at a Chromium binary",
        path.display()
    );
    path
}

/// The page's DOM after its scripts ran for 5 s of virtual time.
async fn dump_dom(url: &str) -> String {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let profile = std::env::temp_dir().join(format!(
        "roundrobin-dashboard-test-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    // Its own process group, so that a run past its time is killed whole.
    .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let pid = child.id().expect("a running child has an id");
    let mut stdout = child.stdout.take().unwrap();
    let run = async {
        let mut dom = String::new();
        stdout.read_to_string(&mut dom).await.unwrap();
        let status = child.wait().await.unwrap();
        (dom, status)
    };
    let result = tokio::time::timeout(BROWSER_TIMEOUT, run).await;
    if result.is_err() {
        // The group is this test's chromium and its helpers only.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &format!("-{pid}")])
            .status();
    }
    let _ = std::fs::remove_dir_all(&profile);
    let (dom, status) = result.unwrap_or_else(|_| panic!("chromium took over {BROWSER_TIMEOUT:?}"));
    assert!(status.success(), "chromium failed: {status}");
    dom
}

/// A `PUT /servers` over the socket (loopback `Host`, no token).
async fn put(server: &Serving, body: &str) -> u16 {
    let mut conn = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = format!(
        "PUT /servers HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.local_addr(),
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer[9..12].parse().unwrap()
}

/// The row of `url` in the dumped DOM: its `<tr ...>` start tag.
fn row<'a>(dom: &'a str, url: &str) -> &'a str {
    let at = dom
        .find(&format!("data-url=\"{url}\""))
        .unwrap_or_else(|| panic!("no row for {url} in:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_server_and_follows_changes() {
    let urls = [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080/api",
        "https://[::1]:8443",
    ];
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    for (i, url) in urls.iter().enumerate() {
        let weight = u32::try_from(i).unwrap() + 1;
        pool.upsert_server(ServerUrl::parse(url).unwrap(), Some(weight))
            .unwrap();
    }
    let server = spawn_on("127.0.0.1:0", Admin::new(Arc::clone(&pool)))
        .await
        .unwrap();
    let page = format!("http://{}/", server.local_addr());

    let dom = dump_dom(&page).await;
    for (i, url) in urls.iter().enumerate() {
        let row = row(&dom, url);
        assert!(row.contains(&format!("data-weight=\"{}\"", i + 1)), "{row}");
        assert!(
            dom.contains(&format!(">{url}<")),
            "the URL is shown as text"
        );
    }
    assert!(dom.contains(">live<"), "the status says live:\n{dom}");
    assert!(dom.contains("<polyline"), "charts are drawn:\n{dom}");
    assert!(dom.contains("total weight 6"), "{dom}");

    // A change through the API shows on the next load.
    let changed = r#"{"url":"http://10.0.0.2:8080/api","weight":7}"#;
    assert_eq!(put(&server, changed).await, 200);
    assert_eq!(
        put(&server, r#"{"url":"http://10.0.0.9:80","weight":1}"#).await,
        200
    );
    let dom = dump_dom(&page).await;
    assert!(row(&dom, "http://10.0.0.2:8080/api").contains("data-weight=\"7\""));
    assert!(row(&dom, "http://10.0.0.9:80").contains("data-weight=\"1\""));
    assert!(dom.contains("total weight 12"), "{dom}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_opens_from_its_query_and_sends_the_token() {
    let pool = Arc::new(RoundRobin::<ServerUrl>::new());
    pool.upsert_server(ServerUrl::parse("http://10.0.0.1:8080").unwrap(), Some(4))
        .unwrap();
    let server = spawn_on("127.0.0.1:0", Admin::new(pool).token("s3cret/+&"))
        .await
        .unwrap();
    let addr = server.local_addr();

    let dom = dump_dom(&format!("http://{addr}/?token=s3cret%2F%2B%26")).await;
    assert!(
        row(&dom, "http://10.0.0.1:8080").contains("data-weight=\"4\""),
        "the page's own requests carried the token"
    );
    let dom = dump_dom(&format!("http://{addr}/?token=wrong")).await;
    assert!(dom.contains("<form") && !dom.contains("data-url"), "{dom}");
    server.shutdown().await;
}
