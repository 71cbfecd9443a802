//! How the proxy reaches its backends: `http://`, `https://` and `h2c://` URLs, and
//! the TLS flags of `https://` ones.

use core::time::Duration;
use std::path::PathBuf;

use clap::Args;
use roundrobin_hyper::{Connector, UpstreamTls};

/// TLS towards `https://` backends.
#[derive(Debug, Clone, Args)]
pub(crate) struct UpstreamArgs {
    /// Also trust the certificate authorities in this PEM file for `https://`
    /// backends (the Mozilla roots are always trusted).
    #[arg(long, value_name = "FILE")]
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Do not check `https://` backends' certificates (tests only: anyone on the path
    /// can read and change the traffic).
    #[arg(long)]
    pub(crate) upstream_insecure: bool,
}

impl UpstreamArgs {
    /// The TLS settings the flags describe; an unreadable or empty CA file is an error
    /// naming it.
    pub(crate) fn tls(&self) -> Result<UpstreamTls, String> {
        let mut tls = UpstreamTls::new();
        if let Some(path) = &self.upstream_ca {
            tls = tls
                .add_ca_file(path)
                .map_err(|e| format!("--upstream-ca: {e}"))?;
        }
        if self.upstream_insecure {
            tracing::warn!(
                "--upstream-insecure: certificates of https:// backends are NOT checked; \
                 anyone on the network path can read and change the traffic"
            );
            tls = tls.insecure();
        }
        Ok(tls)
    }
}

/// The connector every worker's forwarder and the health checks use.
pub(crate) fn connector(tls: &UpstreamTls, connect_timeout: Duration) -> Connector {
    Connector::with_tls(connect_timeout, tls)
}
