/// Errors of the weighted-selection core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
}
