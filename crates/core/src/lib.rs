//! Weighted round-robin selection (layer L0). STUB: being replaced by the real core.
#![no_std]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod error;
mod url;

pub use error::Error;
pub use url::ServerUrl;

#[cfg(feature = "std")]
mod balancer;
#[cfg(feature = "std")]
pub use balancer::{Builder, RoundRobin};

/// Which sequence the balancer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The reference (LVS) interleaved weighted round robin sequence.
    #[default]
    Interleaved,
    /// nginx's smooth weighted round robin sequence.
    Smooth,
}
