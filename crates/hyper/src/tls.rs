//! Serving over TLS (rustls, ring provider): a certificate and key from PEM, ALPN `h2`
//! and `http/1.1`, and a certificate swapped at run time without a restart.

use core::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

/// The protocols offered in the TLS handshake (ALPN), most preferred first: HTTP/2, then
/// HTTP/1.1, as HAProxy's `alpn h2,http/1.1` and nginx's `http2 on`.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key could not be used. Each names the file (or `certificate
/// PEM` / `key PEM` for bytes) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("{name}: cannot read it: {source}")]
    Read {
        /// The file.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The text is not valid PEM (a block that does not decode).
    #[error("{name}: not valid PEM: {source}")]
    Pem {
        /// The file.
        name: String,
        /// What the PEM reader said.
        source: io::Error,
    },
    /// No `CERTIFICATE` block.
    #[error("{name}: no certificate in it (expected a PEM `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate {
        /// The file.
        name: String,
    },
    /// No private key block.
    #[error(
        "{name}: no private key in it (expected a PEM `-----BEGIN PRIVATE KEY-----`, \
         `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
    )]
    NoKey {
        /// The file.
        name: String,
    },
    /// The key is of a kind the ring provider cannot sign with, or malformed.
    #[error("{name}: the private key is not usable: {source}")]
    BadKey {
        /// The file.
        name: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The first certificate could not be parsed.
    #[error("{name}: the certificate is not usable: {source}")]
    BadCertificate {
        /// The file.
        name: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The key is not the one of the (first) certificate.
    #[error("{key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate's file.
        cert: String,
        /// The key's file.
        key: String,
    },
    /// [`TlsAcceptor::reload`] on an acceptor made from PEM bytes: there are no files to
    /// read again.
    #[error("nothing to reload: the certificate was given as PEM bytes, not files")]
    NotFromFiles,
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Serves the current certified key to every handshake; swapped whole by a reload.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

struct Inner {
    acceptor: tokio_rustls::TlsAcceptor,
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
    files: Option<(PathBuf, PathBuf)>,
}

/// The TLS side of a listener: a rustls [`ServerConfig`] with one certificate chain and
/// key, ALPN [`ALPN_PROTOCOLS`] (`h2`, `http/1.1`), TLS 1.2 and 1.3 (rustls' safe
/// defaults, as HAProxy's `ssl-min-ver TLSv1.2` and nginx's `ssl_protocols TLSv1.2
/// TLSv1.3`) and no client certificates. Cheap to clone: clones share the certificate,
/// so one [`reload`](Self::reload) reaches every listener and worker using it.
///
/// Pass it to [`serve_tls_with`](crate::serve_tls_with) or
/// [`spawn_tls`](crate::spawn_tls); [`accept`](Self::accept) runs one handshake for an
/// accept loop of your own.
///
/// A reload swaps the certified key atomically: handshakes that start afterwards present
/// the new certificate, connections already open keep theirs. A certificate or key that
/// is unreadable, missing, malformed or mismatched is an error, at start and on reload
/// (when the running one stays).
///
/// ```no_run
/// use roundrobin_hyper::TlsAcceptor;
///
/// let tls = TlsAcceptor::from_pem_files("/etc/roundrobin/cert.pem", "/etc/roundrobin/key.pem")?;
/// // ... serve with it; later, after the files were renewed:
/// if let Err(e) = tls.reload() {
///     eprintln!("keeping the running certificate: {e}");
/// }
/// # Ok::<(), roundrobin_hyper::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Reads the certificate chain (the server's certificate first, then its
    /// intermediates) and the private key (PKCS#8, PKCS#1 or SEC1) from PEM files; they
    /// may be the same file. [`reload`](Self::reload) reads them again.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let provider = provider();
        let certified = read_files(cert, key, &provider)?;
        Self::new(certified, provider, Some((cert.to_owned(), key.to_owned())))
    }

    /// The same from PEM text in memory (errors name them `certificate PEM` and `key
    /// PEM`).
    ///
    /// ```
    /// # fn pem() -> (Vec<u8>, Vec<u8>) { (Vec::new(), Vec::new()) }
    /// use roundrobin_hyper::{TlsAcceptor, TlsError};
    ///
    /// let (cert, key) = pem(); // from your secret store
    /// match TlsAcceptor::from_pem(&cert, &key) {
    ///     Ok(tls) => assert_eq!(tls.server_config().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]),
    ///     Err(e) => assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}"),
    /// }
    /// ```
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let provider = provider();
        let certified = certified_key(
            cert,
            CERT_PEM.to_owned(),
            key,
            KEY_PEM.to_owned(),
            &provider,
        )?;
        Self::new(certified, provider, None)
    }

    fn new(
        certified: CertifiedKey,
        provider: Arc<CryptoProvider>,
        files: Option<(PathBuf, PathBuf)>,
    ) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(certified)));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        Ok(Self {
            inner: Arc::new(Inner {
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&config)),
                config,
                resolver,
                provider,
                files,
            }),
        })
    }

    /// Reads the files given to [`from_pem_files`](Self::from_pem_files) again and, if
    /// they hold a valid certificate and matching key, swaps them in: new handshakes use
    /// them, open connections keep the old ones. On an error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.inner.files else {
            return Err(TlsError::NotFromFiles);
        };
        let certified = read_files(cert, key, &self.inner.provider)?;
        self.inner.resolver.0.store(Arc::new(certified));
        Ok(())
    }

    /// Swaps in a certificate and key given as PEM text, as [`reload`](Self::reload)
    /// does. Later `reload`s read the files again (if there are any).
    pub fn reload_from_pem(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let certified = certified_key(
            cert,
            CERT_PEM.to_owned(),
            key,
            KEY_PEM.to_owned(),
            &self.inner.provider,
        )?;
        self.inner.resolver.0.store(Arc::new(certified));
        Ok(())
    }

    /// The rustls configuration (its certificate resolver follows reloads).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.inner.config)
    }

    /// The certificate chain new handshakes present now, the server's first.
    pub fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.resolver.0.load().cert.clone()
    }

    /// Runs the server side of a handshake on `io` (not bounded in time: wrap it in a
    /// timeout, as [`serve_tls_with`](crate::serve_tls_with) does with the header
    /// timeout).
    pub fn accept<IO>(&self, io: IO) -> tokio_rustls::Accept<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.acceptor.accept(io)
    }
}

const CERT_PEM: &str = "certificate PEM";
const KEY_PEM: &str = "key PEM";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            name: path.display().to_string(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    certified_key(
        &cert_pem,
        cert.display().to_string(),
        &key_pem,
        key.display().to_string(),
        provider,
    )
}

/// The chain of `cert_pem` with the key of `key_pem`, checked to belong together.
fn certified_key(
    cert_pem: &[u8],
    cert: String,
    key_pem: &[u8],
    key: String,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|source| TlsError::Pem {
            name: cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { name: cert });
    }
    let private: PrivateKeyDer<'static> = match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(private)) => private,
        Ok(None) => return Err(TlsError::NoKey { name: key }),
        Err(source) => return Err(TlsError::Pem { name: key, source }),
    };
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::BadKey {
            name: key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch { cert, key }),
        Err(source) => Err(TlsError::BadCertificate { name: cert, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn good_pem_has_alpn_h2_and_http11() {
        let (cert, key) = pem();
        let tls = TlsAcceptor::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(
            tls.server_config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(tls.certificate_chain().len(), 1);
        assert!(matches!(tls.reload(), Err(TlsError::NotFromFiles)));
    }

    #[test]
    fn bad_pem_is_an_error_naming_what_is_wrong() {
        let (cert, key) = pem();
        let (other_cert, other_key) = pem();
        let err = |c: &str, k: &str| TlsAcceptor::from_pem(c.as_bytes(), k.as_bytes()).unwrap_err();
        let e = err("", &key);
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(
            e.to_string().starts_with("certificate PEM: no certificate"),
            "{e}"
        );
        // key and certificate swapped
        let e = err(&key, &cert);
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = err(&cert, &cert);
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        assert!(e.to_string().starts_with("key PEM: no private key"), "{e}");
        let e = err(&cert, &other_key);
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "key PEM does not match the certificate in certificate PEM"
        );
        let e = err(
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            &key,
        );
        assert!(
            matches!(e, TlsError::Pem { .. } | TlsError::BadCertificate { .. }),
            "{e}"
        );
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = err(bogus, &key);
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e}");
        let bogus_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = err(&cert, bogus_key);
        assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
        // a bad reload keeps the running certificate
        let tls = TlsAcceptor::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let before = tls.certificate_chain();
        assert!(tls
            .reload_from_pem(other_cert.as_bytes(), key.as_bytes())
            .is_err());
        assert_eq!(tls.certificate_chain(), before);
        tls.reload_from_pem(other_cert.as_bytes(), other_key.as_bytes())
            .unwrap();
        assert_ne!(tls.certificate_chain(), before);
    }

    #[test]
    fn files_are_named_in_errors_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("roundrobin-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let missing = dir.join("missing.pem");
        let e = TlsAcceptor::from_pem_files(&missing, &key_path).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem: cannot read it"), "{e}");
        let (cert, key) = pem();
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let tls = TlsAcceptor::from_pem_files(&cert_path, &key_path).unwrap();
        let before = tls.certificate_chain();
        std::fs::write(&key_path, "not a key").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("key.pem: no private key"), "{e}");
        assert_eq!(tls.certificate_chain(), before);
        let (cert, key) = pem();
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.certificate_chain(), before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
