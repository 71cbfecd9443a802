//! Sets `cfg(rest_epoll)` where a plain TCP connection at rest can wait in an epoll of
//! its own (`src/resting.rs`): Linux and Android (epoll, with mio's `Poll` as a file
//! descriptor), 64-bit (an entry's key is its epoll token), and mio not forced onto
//! `poll(2)`.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rest_epoll)");
    println!("cargo::rerun-if-changed=build.rs");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    let forced_poll = env::var_os("CARGO_CFG_MIO_UNSUPPORTED_FORCE_POLL_POLL").is_some();
    if matches!(os.as_str(), "linux" | "android") && width == "64" && !forced_poll {
        println!("cargo::rustc-cfg=rest_epoll");
    }
}
