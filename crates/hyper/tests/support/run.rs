//! The runtime every end-to-end test body runs on: two worker threads, bounded in time.

#![allow(dead_code)] // each test file takes a part

use core::future::Future;
use core::time::Duration;

/// Every test body runs under this bound.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `f` on a fresh 2-thread runtime, failing if it takes longer than
/// [`TEST_TIMEOUT`].
pub(crate) fn run<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(TEST_TIMEOUT, f)
                .await
                .expect("test timed out");
        });
}
