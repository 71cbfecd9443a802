//! The PGO training run (`examples/pgo_train.rs`, run by `cargo xtask dist`) against
//! the binary of this build, one second a phase: its three phases (defaults; sticky,
//! rebalance and access log on two workers; TLS) get every request answered and the
//! binary exits cleanly after each, so the training `dist` relies on keeps working.

#[allow(dead_code)] // `main` is the example's
#[path = "../examples/pgo_train.rs"]
mod pgo_train;
mod support;

use core::time::Duration;

#[test]
fn the_training_run_passes_against_this_build() {
    support::run(async {
        pgo_train::train(&support::bin(), Duration::from_secs(1))
            .await
            .unwrap();
    });
}
