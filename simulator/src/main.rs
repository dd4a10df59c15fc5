//! `vigil-sim`: virtual patients and devices for Vigil's tests, demos and benchmarks.
//!
//! This release ships the binary's skeleton only; `provision`, `run` and `bench` (see the
//! contract) arrive with the simulator's own milestone. Until then, the end-to-end benchmark
//! lives in the gateway crate (`cargo bench --bench e2e`).

use std::process::ExitCode;

const USAGE: &str = "usage: vigil-sim <provision|run|bench> [options]

The simulator's commands are not implemented in this release.
For an end-to-end throughput figure today, run: cargo bench --bench e2e";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("vigil-sim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
