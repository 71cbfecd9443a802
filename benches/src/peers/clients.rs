//! Plain-socket HTTP/1.1 clients: the weight check and the idle connections.
//!
//! [`weight_split`] sends requests over one keep-alive connection and counts which
//! backend answered (the body names it), to show each balancer really splits 3:2:1.
//! [`open_idle`] opens many keep-alive connections and sends one request on each, so
//! the balancer holds them as established, idle HTTP connections (not merely accepted
//! sockets) while its RSS is read.

use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;

use super::process::check_stop;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Connects to 127.0.0.1:`port` with a 2 s connect timeout and 5 s read timeout.
fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one response (status 200, `Content-Length` body) and returns its body.
fn read_response(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(bad("response head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before the response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(bad(head.lines().next().unwrap_or("empty response")));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("response without content-length"))?;
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed in the body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(body)
}

/// Sends `requests` requests over one keep-alive connection to 127.0.0.1:`port` and
/// counts the answers of each backend (`b1`, `b2`, `b3`), in backend order.
pub(crate) fn weight_split(port: u16, requests: u32) -> Result<[u32; 3], String> {
    let mut stream = connect(port).map_err(|e| format!("port {port}: {e}"))?;
    let mut counts = [0; 3];
    for _ in 0..requests {
        stream
            .write_all(REQUEST)
            .and_then(|()| read_response(&mut stream))
            .map_err(|e| format!("port {port}: {e}"))
            .map(|body| match body.as_slice() {
                b"b1\n" => counts[0] += 1,
                b"b2\n" => counts[1] += 1,
                b"b3\n" => counts[2] += 1,
                _ => {}
            })?;
    }
    Ok(counts)
}

/// Idle keep-alive connections held open; closed when dropped.
#[derive(Debug)]
pub(crate) struct IdleConns {
    /// The connections, each with one request answered.
    pub(crate) streams: Vec<TcpStream>,
    /// Why fewer than asked were opened, if so.
    pub(crate) error: Option<String>,
}

/// Opens up to `n` connections to 127.0.0.1:`port`, in batches of 100 (connect all,
/// send a request on each, read each answer), stopping at the first failure.
///
/// A batch stays below the smallest listen backlog (128, what a plain tokio or std
/// listener gets), so no SYN is dropped for a full accept queue and retried a second
/// later: opening the connections takes about as long on every target.
pub(crate) fn open_idle(port: u16, n: usize) -> Result<IdleConns, String> {
    const BATCH: usize = 100;
    let mut streams = Vec::with_capacity(n);
    let mut error = None;
    while streams.len() < n && error.is_none() {
        check_stop()?;
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(n - streams.len()) {
            match connect(port).and_then(|mut s| s.write_all(REQUEST).map(|()| s)) {
                Ok(s) => batch.push(s),
                Err(e) => {
                    error = Some(format!("connection {}: {e}", streams.len() + batch.len()));
                    break;
                }
            }
        }
        for mut s in batch {
            match read_response(&mut s) {
                Ok(_) => streams.push(s),
                Err(e) => {
                    error.get_or_insert_with(|| format!("connection {}: {e}", streams.len()));
                }
            }
        }
    }
    Ok(IdleConns { streams, error })
}
