//! Nothing here: this crate exists for `benches/downstream.rs`, which measures shmlock's hot
//! paths from another crate, the way a user's program calls them (the default release
//! profile, no LTO), so that a call that does not inline across crates shows.
//!
//! ```sh
//! cargo bench -p downstream-bench --bench downstream -- --warm-up-time 1 --measurement-time 2
//! ```
