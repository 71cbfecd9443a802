//! How the forwarder reaches servers, by the scheme of their URL: `http://` over TCP
//! (HTTP/1.1), `https://` over TLS (HTTP/2 or HTTP/1.1, as ALPN decides) and `h2c://`
//! as cleartext HTTP/2 with prior knowledge.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;

use http::uri::{Scheme, Uri};
use http::Request;
use http_body::Body;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::TcpStream;

use crate::connpool::{Http1Pool, Sent};
use crate::{BoxError, Error};

/// Idle keep-alive connections kept per server, per pool (one pool per worker in the
/// proxy). A pool smaller than its traffic's concurrency closes connections that the
/// next requests open again: with 128, 2,560 concurrent HTTP/2 streams to three
/// servers opened a new upstream connection for one request in five. Idle connections
/// are closed after 90 s unused, so a burst's connections do not stay. nginx's
/// `keepalive` is commonly 32 to 1,024; HAProxy keeps what `http-reuse` can use.
pub const MAX_IDLE_PER_SERVER: usize = 1024;

/// How long an unused upstream connection is kept open (nginx's `keepalive_timeout`
/// for upstreams is 60 s; HAProxy closes idle server connections as the pool needs).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[cfg(feature = "tls")]
type Inner = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Inner = HttpConnector;

#[cfg(feature = "tls")]
type InnerIo = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
#[cfg(not(feature = "tls"))]
type InnerIo = TokioIo<TcpStream>;

/// Opens connections to servers: TCP with `TCP_NODELAY` and a connect timeout, and for
/// `https://` servers TLS on rustls, offering ALPN `h2` and `http/1.1`, with the URL's
/// host as SNI name and certificate name.
///
/// By default certificates are checked against the Mozilla root store (webpki
/// roots); [`UpstreamTls`] adds a private CA, a client certificate (mTLS) or, for tests
/// only, turns checking off. Without the `tls` feature only `http://` is supported and
/// an `https://` server fails to connect with an error that says so.
///
/// ```
/// use std::time::Duration;
/// use roundrobin_hyper::{pooled_client_with, Connector, Forwarder};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let connector = Connector::new(Duration::from_secs(2));
/// let forwarder: Forwarder = Forwarder::with_connector(connector);
/// # let _ = forwarder;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Connector {
    plain: HttpConnector,
    inner: Inner,
}

impl Connector {
    /// Connects within `connect_timeout`; `https://` servers are checked against the
    /// webpki roots.
    pub fn new(connect_timeout: Duration) -> Self {
        #[cfg(feature = "tls")]
        {
            Self::with_tls(connect_timeout, &UpstreamTls::new())
        }
        #[cfg(not(feature = "tls"))]
        {
            let plain = tcp(connect_timeout);
            Self {
                inner: plain.clone(),
                plain,
            }
        }
    }

    /// Connects within `connect_timeout`, speaking TLS to `https://` servers as `tls`
    /// says.
    #[cfg(feature = "tls")]
    pub fn with_tls(connect_timeout: Duration, tls: &UpstreamTls) -> Self {
        let plain = tcp(connect_timeout);
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(plain.clone());
        Self { plain, inner }
    }

    /// The plain TCP connector (for `h2c://` servers).
    pub(crate) fn plain(&self) -> HttpConnector {
        self.plain.clone()
    }
}

fn tcp(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(false);
    connector
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if uri.scheme() != Some(&Scheme::HTTP) && !cfg!(feature = "tls") {
            return Box::pin(core::future::ready(Err(BoxError::from(
                "only http:// servers are supported without the `tls` feature",
            ))));
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await.map_err(boxed)?;
            Ok(UpstreamIo { io })
        })
    }
}

/// The connector's error, boxed (it already is with TLS).
fn boxed<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

pin_project! {
    /// A connection to a server, plain or TLS, as [`Connector`] opened it.
    #[derive(Debug)]
    pub struct UpstreamIo {
        #[pin]
        io: InnerIo,
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

/// A keep-alive client over `connector`: at most [`MAX_IDLE_PER_SERVER`] idle
/// connections per server (scheme + authority), each closed after 90 s idle; HTTP/1.1
/// or, where TLS ALPN picks it, HTTP/2.
pub fn pooled_client_with<B>(connector: Connector) -> Client<Connector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_SERVER)
        .set_host(false)
        .build(connector)
}

/// A client for `h2c://` servers: HTTP/2 with prior knowledge over `connector`'s TCP
/// connections, many requests multiplexed over one connection per server.
pub(crate) fn h2c_client<B>(connector: HttpConnector) -> Client<HttpConnector, B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(true)
        .set_host(false)
        .build(connector)
}

/// The clients of one forwarder: `main` for `https://` servers (and `http://` ones when
/// there is no `http1` pool: a client the user passed), `h2c` for `h2c://` ones,
/// `http1`, the forwarder's own pool, for `http://` ones.
#[derive(Debug)]
pub(crate) struct Clients<C, B> {
    pub(crate) main: Client<C, B>,
    pub(crate) h2c: Client<HttpConnector, B>,
    pub(crate) http1: Option<Http1Pool<B>>,
}

pin_project! {
    /// The future of [`Clients::send`]: the forwarder's own pool's, or hyper-util's.
    #[project = SendingProj]
    pub(crate) enum Sending<P> {
        Pooled { #[pin] future: P },
        Other { #[pin] future: ResponseFuture },
    }
}

impl<P: Future<Output = Result<Sent, Error>>> Future for Sending<P> {
    type Output = Result<Sent, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SendingProj::Pooled { future } => future.poll(cx),
            SendingProj::Other { future } => match core::task::ready!(future.poll(cx)) {
                Ok(res) => Poll::Ready(Ok((res, None))),
                Err(e) if e.is_connect() => Poll::Ready(Err(Error::Connect(Box::new(e)))),
                Err(e) => Poll::Ready(Err(Error::from_inner(Box::new(e)))),
            },
        }
    }
}

/// The `h2c` scheme.
const H2C: &str = "h2c";

impl<C, B> Clients<C, B>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `req` to the server its URI names, by the URI's scheme: the response
    /// and, from the `http1` pool, the connection's way back to it.
    ///
    /// The client is chosen here, not in the future: the future is the chosen
    /// client's alone, with no slot for the request beside it (it is moved on every
    /// request).
    pub(crate) fn send(
        &self,
        req: Request<B>,
        upgrade: bool,
    ) -> Sending<impl Future<Output = Result<Sent, Error>> + '_> {
        match &self.http1 {
            Some(pool) if req.uri().scheme() == Some(&Scheme::HTTP) => Sending::Pooled {
                future: pool.send(req, upgrade),
            },
            _ => Sending::Other {
                future: self.request(req),
            },
        }
    }

    /// Sends `req` over hyper-util's clients, by the URI's scheme.
    fn request(&self, mut req: Request<B>) -> ResponseFuture {
        if req.uri().scheme_str() != Some(H2C) {
            return self.main.request(req);
        }
        // On the wire the scheme is `http`: `h2c` only says how to connect.
        let mut parts = core::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        self.h2c.request(req)
    }
}

#[cfg(feature = "tls")]
pub use tls::{UpstreamTls, UpstreamTlsError};

#[cfg(feature = "tls")]
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    /// A TLS setting for `https://` servers that could not be applied.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum UpstreamTlsError {
        /// A file could not be read.
        #[error("cannot read {path}: {source}")]
        Read {
            /// The file.
            path: String,
            /// Why.
            source: std::io::Error,
        },
        /// PEM text held no certificate (or no private key) where one was expected.
        #[error("{what}: no {expected} found in the PEM text")]
        Missing {
            /// The file, or `PEM` for bytes.
            what: String,
            /// `certificate` or `private key`.
            expected: &'static str,
        },
        /// rustls refused a certificate or key.
        #[error("{what}: {source}")]
        Rustls {
            /// The file, or `PEM` for bytes.
            what: String,
            /// Why.
            source: rustls::Error,
        },
    }

    /// How the forwarder speaks TLS to `https://` servers: which certificate
    /// authorities it trusts, whether it presents a client certificate, and (for tests
    /// only) whether it checks certificates at all.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use roundrobin_hyper::{Connector, UpstreamTls};
    /// let tls = UpstreamTls::new()
    ///     .add_ca_file("/etc/roundrobin/internal-ca.pem")?
    ///     .client_cert_files("/etc/roundrobin/proxy.pem", "/etc/roundrobin/proxy.key")?;
    /// let connector = Connector::with_tls(Duration::from_secs(3), &tls);
    /// # let _ = connector;
    /// # Ok::<(), roundrobin_hyper::UpstreamTlsError>(())
    /// ```
    #[derive(Clone, Debug)]
    pub struct UpstreamTls {
        roots: RootCertStore,
        client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
        insecure: bool,
    }

    impl Default for UpstreamTls {
        fn default() -> Self {
            Self::new()
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn read(path: &Path) -> Result<Vec<u8>, UpstreamTlsError> {
        std::fs::read(path).map_err(|source| UpstreamTlsError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    fn certificates(
        pem: &[u8],
        what: &str,
    ) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut &*pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(UpstreamTlsError::Missing {
                what: what.to_owned(),
                expected: "certificate",
            });
        }
        Ok(certs)
    }

    impl UpstreamTls {
        /// Trusts the Mozilla root store (webpki roots), presents no client
        /// certificate, checks every certificate.
        pub fn new() -> Self {
            Self {
                roots: RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                client_auth: None,
                insecure: false,
            }
        }

        /// Also trusts the certificate authorities in `pem` (PEM text, one or more
        /// certificates).
        pub fn add_ca_pem(self, pem: &[u8]) -> Result<Self, UpstreamTlsError> {
            self.add_ca(pem, "PEM")
        }

        /// Also trusts the certificate authorities in the PEM file at `path`.
        pub fn add_ca_file(self, path: impl AsRef<Path>) -> Result<Self, UpstreamTlsError> {
            let path = path.as_ref();
            self.add_ca(&read(path)?, &path.display().to_string())
        }

        fn add_ca(mut self, pem: &[u8], what: &str) -> Result<Self, UpstreamTlsError> {
            for cert in certificates(pem, what)? {
                self.roots
                    .add(cert)
                    .map_err(|source| UpstreamTlsError::Rustls {
                        what: what.to_owned(),
                        source,
                    })?;
            }
            Ok(self)
        }

        /// Presents this certificate chain and key (PEM text) to servers that ask for
        /// one (mutual TLS).
        pub fn client_cert_pem(
            mut self,
            chain: &[u8],
            key: &[u8],
        ) -> Result<Self, UpstreamTlsError> {
            let chain = certificates(chain, "client certificate")?;
            let key = rustls_pemfile::private_key(&mut &*key)
                .ok()
                .flatten()
                .ok_or(UpstreamTlsError::Missing {
                    what: "client key".to_owned(),
                    expected: "private key",
                })?;
            // Check now that rustls takes them, rather than at the first handshake.
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|source| UpstreamTlsError::Rustls {
                    what: "client certificate".to_owned(),
                    source,
                })?
                .with_root_certificates(RootCertStore::empty())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|source| UpstreamTlsError::Rustls {
                    what: "client certificate".to_owned(),
                    source,
                })?;
            self.client_auth = Some((chain, Arc::new(key)));
            Ok(self)
        }

        /// [`client_cert_pem`](Self::client_cert_pem) from two PEM files.
        pub fn client_cert_files(
            self,
            chain: impl AsRef<Path>,
            key: impl AsRef<Path>,
        ) -> Result<Self, UpstreamTlsError> {
            let (chain, key) = (read(chain.as_ref())?, read(key.as_ref())?);
            self.client_cert_pem(&chain, &key)
        }

        /// Accepts any certificate from any server. For tests against self-signed
        /// servers only: it lets anyone on the path read and change the traffic.
        pub fn insecure(mut self) -> Self {
            self.insecure = true;
            self
        }

        /// Whether certificate checking is off.
        pub fn is_insecure(&self) -> bool {
            self.insecure
        }

        /// The rustls client configuration (the connector sets ALPN).
        pub(crate) fn client_config(&self) -> ClientConfig {
            let provider = provider();
            let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions");
            let builder = if self.insecure {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            } else {
                builder.with_root_certificates(self.roots.clone())
            };
            match &self.client_auth {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .expect("checked when it was set"),
                None => builder.with_no_client_auth(),
            }
        }
    }

    /// Accepts every certificate, still checking handshake signatures.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
