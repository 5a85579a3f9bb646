//! What `distribute-bench-load` prints (one JSON object on stdout).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Failed requests by cause.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    /// `connect()` failed (refused, no ports, ...).
    pub connect: u64,
    /// Reset or closed before a complete response.
    pub reset: u64,
    /// No complete response within the timeout (including those still in
    /// flight when the run ended).
    pub timeout: u64,
    /// A response that was not `200 OK` or could not be parsed.
    pub bad: u64,
}

impl Errors {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.bad
    }
}

/// The result of one load run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// `short` (connect, request, close) or `keepalive`.
    pub workload: String,
    /// Offered rate in requests per second; 0 for closed loop (as fast as
    /// `connections` outstanding requests allow: a capacity run).
    pub rate: f64,
    /// Keep-alive connections, or the most connections in flight (short).
    pub connections: usize,
    /// Length of the measured window in seconds (after warm-up).
    pub duration_s: f64,
    /// Requests scheduled in the measured window.
    pub scheduled: u64,
    /// Scheduled but never sent, because every allowed connection was busy
    /// until the end (the server fell behind the offered rate).
    pub unsent: u64,
    /// Complete `200 OK` responses in the measured window.
    pub completed: u64,
    /// Failures in the measured window.
    pub errors: Errors,
    /// `completed / duration_s`.
    pub throughput: f64,
    /// From the intended send time (open loop) or the actual send time
    /// (closed loop) to the last byte of the response.
    pub latency_us: Latency,
    /// Responses per worker (`pid=` of the body).
    pub workers: BTreeMap<u32, u64>,
    /// Largest share over smallest share among `workers` (1.0 = perfectly fair).
    pub fairness: f64,
    /// CPU time the load generator used, in seconds (user + system).
    pub cpu_s: f64,
}
