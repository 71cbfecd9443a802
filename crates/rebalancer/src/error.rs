//! The crate's error type.

use core::time::Duration;

/// Errors of the rebalancer layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying balancer refused the operation.
    #[error(transparent)]
    Balancer(#[from] roundrobin_core::Error),
    /// A rolling window was asked for 0 buckets.
    #[error("a rolling window needs at least one bucket")]
    ZeroBuckets,
    /// A rolling window was asked for more buckets than [`crate::MAX_BUCKETS`].
    #[error("a rolling window holds at most {max} buckets, got {0}", max = crate::MAX_BUCKETS)]
    TooManyBuckets(usize),
    /// A rolling window was asked for a bucket resolution under one second.
    #[error("bucket resolution must be at least 1 s, got {0:?}")]
    ResolutionTooSmall(Duration),
    /// A latency meter was asked for a zero precision.
    #[error("latency precision must be greater than zero")]
    ZeroPrecision,
    /// The split threshold is not a finite number greater than zero.
    #[error("split threshold must be finite and greater than zero, got {0}")]
    InvalidThreshold(f64),
}
