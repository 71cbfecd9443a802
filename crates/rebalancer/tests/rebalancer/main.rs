//! Integration tests of the rebalancer: the pinned scenarios, properties over random
//! pools and ratings, and concurrent recording. All on a manual clock: no sleeps.

mod common;
mod concurrency;
mod health;
mod properties;
mod real_meters;
mod scenarios;
mod weights;
