//! A deterministic simulation of the rebalancer: three servers, one of which fails 30 %
//! of its requests for a while and then heals. Prints, every 5 simulated seconds, the
//! weights the rebalancer gave each server and the share of the traffic each one got.
//!
//! Run: `cargo run -p roundrobin-rebalancer --example simulate`
//!
//! What to look for (the defaults: error-ratio meter over 10 × 1 s, 10 s backoff):
//! - 0–10 s: the meters are not ready (less than 10 s of data); weights stay 1/1/1.
//! - from 20 s, "b" fails: within a second the healthy servers grow ×4, then ×4 every
//!   10 s, and "b"'s share of the traffic drops towards 0.05 %. "b rating" is its
//!   meter's error ratio over the last 10 s.
//! - a starved server says little: at weight 1 against 1024, "b" gets about one request
//!   in 2049, and its 10 s window may hold none of its errors. The ratings are then
//!   even and the weights start converging, until b's next error (the reference
//!   behaves the same). That is why the weights swing between 256 and 1024 here.
//! - from 80 s, "b" heals; once its errors have left the 10 s window the ratings stay
//!   even and the weights shrink ÷4 per step back to 1/1/1, then stay there.
//!
//! There is no real time, no network and no randomness: a manual clock, a loop, and a
//! fixed failure pattern (3 of every 10 requests).

use core::time::Duration;
use std::sync::Arc;

use roundrobin_core::RoundRobin;
use roundrobin_rebalancer::{Clock, ManualClock, Rebalancer};

const SERVERS: [&str; 3] = ["a", "b", "c"];
/// Requests per simulated second.
const RATE: u64 = 200;
/// Seconds between two rows of the table.
const ROW: u64 = 5;
/// "b" fails from `BREAKS` to `HEALS` (seconds).
const BREAKS: u64 = 20;
const HEALS: u64 = 80;
const END: u64 = 160;

fn main() -> Result<(), roundrobin_rebalancer::Error> {
    let clock = ManualClock::new();
    let start = clock.now();
    let rebalancer = Rebalancer::builder(RoundRobin::new())
        .clock(Arc::new(clock.clone()))
        .build()?;
    for server in SERVERS {
        rebalancer.upsert_server(server, Some(1))?;
    }

    println!(
        "{:>5}  {:<8} | {:>6} {:>6} {:>6} | {:>7} {:>7} {:>7} | b fails | b rating",
        "t (s)", "", "a", "b", "c", "a", "b", "c"
    );
    println!(
        "{:>5}  {:<8} | {:^20} | {:^23} |",
        "", "", "weights", "share of requests"
    );

    let tick = Duration::from_secs(1) / RATE as u32;
    let mut b_requests = 0u64;
    for row_start in (0..END).step_by(ROW as usize) {
        let mut picks = [0u64; SERVERS.len()];
        for _ in 0..ROW * RATE {
            let server = rebalancer.next_server()?;
            let index = SERVERS.iter().position(|s| *s == server).unwrap_or(0);
            picks[index] += 1;
            let t = (clock.now() - start).as_secs();
            let broken = (BREAKS..HEALS).contains(&t);
            let status = if server == "b" {
                b_requests += 1;
                // 3 of every 10 requests to "b" fail while it is broken
                if broken && b_requests % 10 < 3 {
                    500
                } else {
                    200
                }
            } else {
                200
            };
            rebalancer.record(&server, status, Duration::from_millis(5));
            clock.advance(tick);
        }

        let states = rebalancer.snapshot();
        let weight = |i: usize| states[i].current_weight;
        let share = |i: usize| 100.0 * picks[i] as f64 / (ROW * RATE) as f64;
        let phase = if row_start + ROW <= BREAKS {
            "healthy"
        } else if row_start < HEALS {
            "b broken"
        } else {
            "b healed"
        };
        println!(
            "{:>5}  {:<8} | {:>6} {:>6} {:>6} | {:>6.2}% {:>6.2}% {:>6.2}% | {:<7} | {:.3}",
            row_start + ROW,
            phase,
            weight(0),
            weight(1),
            weight(2),
            share(0),
            share(1),
            share(2),
            if (BREAKS..HEALS).contains(&row_start) {
                "30 %"
            } else {
                "-"
            },
            states[1].rating,
        );
    }
    Ok(())
}
