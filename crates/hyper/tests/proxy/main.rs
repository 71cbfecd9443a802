//! End-to-end tests of the balancer: real hyper backends, the proxy and a client on
//! 127.0.0.1, each test bounded by `support/run.rs`'s `TEST_TIMEOUT`.

mod balancing;
mod common;
mod errors;
mod health;
mod limits;
mod sticky;
mod streaming;
mod timeouts;
