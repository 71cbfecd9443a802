//! The flags of retries, timeouts, limits, ejection, health checks and slow start, and
//! the library settings they make. Defaults beside HAProxy's and nginx's are in the
//! crate README.

use core::time::Duration;

use clap::Args;
use roundrobin_hyper::{HealthCheck, Retry, RetryOn, ServerLimits};
use roundrobin_rebalancer::{Checks, Ejection, SlowStart};

use crate::args::parse_duration;

/// How the proxy keeps requests alive when servers fail, and bounds what clients send.
#[derive(Debug, Clone, Args)]
pub(crate) struct Resilience {
    /// Retries of a failed request on another server (0 = off).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) retries: u32,
    /// What is retried: connect, reset, timeout, 502, 503, 504 (comma-separated).
    #[arg(long, value_name = "LIST", default_value = "connect,reset", value_parser = RetryOn::parse)]
    pub(crate) retry_on: RetryOn,
    /// Also retry idempotent requests with a body of at most this many bytes, read
    /// whole before the first try (0 = off: only bodiless requests are retried).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub(crate) replay_bodies: usize,
    /// How long connecting to a server may take.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "3s")]
    pub(crate) connect_timeout: Duration,
    /// Idle time between body chunks, both ways (and between bytes of an upgraded
    /// connection, a WebSocket say).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30s")]
    pub(crate) body_timeout: Duration,
    /// From a request's first byte to the end of its head (slow clients).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "10s")]
    pub(crate) header_timeout: Duration,
    /// How long a keep-alive client connection may wait for its next request.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "60s")]
    pub(crate) idle_timeout: Duration,
    /// How long a keep-alive client connection may wait for its next request before it
    /// hands back its HTTP buffers (it stays open; the next request builds them again).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "100ms")]
    pub(crate) idle_release: Duration,
    /// Client connections open at once; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Failures in a row that eject a server (0 = off).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) eject_after: u32,
    /// How long a first ejection lasts (the n-th lasts n times as long, up to 10x).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30s")]
    pub(crate) eject_time: Duration,
    /// The largest share of the servers ejected at once, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) max_ejected: u8,
    /// Path of an HTTP health check on every server (off when absent).
    #[arg(long, value_name = "PATH")]
    pub(crate) health_check: Option<String>,
    /// Time between two health checks of a server.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "5s")]
    pub(crate) health_interval: Duration,
    /// How long one health check may take.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "2s")]
    pub(crate) health_timeout: Duration,
    /// Passed checks in a row that bring a server back.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) health_rise: u32,
    /// Failed checks in a row that take a server out.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) health_fall: u32,
    /// Ramp a server that is added or comes back from 10 % to its weight over this
    /// long (0 = off).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    pub(crate) slow_start: Duration,
    /// How long a graceful shutdown waits for in-flight requests and open tunnels
    /// (WebSocket).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30s")]
    pub(crate) shutdown_timeout: Duration,
}

impl Resilience {
    pub(crate) fn retry(&self) -> Retry {
        Retry {
            retries: self.retries,
            on: self.retry_on,
        }
    }

    pub(crate) fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            idle_release: self.idle_release,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            shutdown_timeout: self.shutdown_timeout,
            ..ServerLimits::default()
        }
    }

    pub(crate) fn ejection(&self) -> Ejection {
        Ejection {
            after: self.eject_after,
            base_time: self.eject_time,
            max_time: self.eject_time.saturating_mul(10),
            max_percent: self.max_ejected,
        }
    }

    pub(crate) fn checks(&self) -> Checks {
        Checks {
            rise: self.health_rise,
            fall: self.health_fall,
        }
    }

    pub(crate) fn slow_start(&self) -> SlowStart {
        SlowStart {
            window: self.slow_start,
            ..SlowStart::OFF
        }
    }

    pub(crate) fn health_check(&self) -> Option<HealthCheck> {
        let path = self.health_check.as_deref()?;
        Some(
            HealthCheck::new(path)
                .interval(self.health_interval)
                .timeout(self.health_timeout),
        )
    }
}
