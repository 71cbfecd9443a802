/// Errors of the weighted-selection core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(deprecated)]
pub enum Error {
    /// The pool is empty.
    #[error("no servers in the pool")]
    NoServers,
    /// Every server in the pool has weight 0.
    #[error("all servers have weight 0")]
    AllWeightsZero,
    /// `remove_server` named a server that is not in the pool.
    #[error("server not found")]
    ServerNotFound,
    /// A server URL could not be parsed.
    #[error("invalid server url: {0}")]
    InvalidUrl(&'static str),
    /// The pool would hold more than `u32::MAX` servers.
    #[error("more than u32::MAX servers")]
    TooManyServers,
    /// Never returned any more: the smooth policy used to reject periods above
    /// `MAX_SMOOTH_PERIOD` picks, it now handles any weights in O(n) memory. Kept so
    /// that code matching on it still compiles.
    #[deprecated(note = "never returned: the smooth policy accepts any period")]
    #[error("smooth period of {period} picks exceeds the maximum of {max}")]
    PeriodTooLong {
        /// The period the change would have produced.
        period: u64,
        /// The largest period the smooth policy accepts.
        max: u64,
    },
}
