//! Benchmark pieces for `cargo xtask bench`.
//!
//! * [`handler`]: the request handler every model shares — HTTP/1.1 hello with a
//!   configurable busy-spin per request, answering `instance=I pid=P` like the
//!   `distribute-hello` demo instance (and parsed with the same
//!   [`distribute_instance::http`] code).
//! * [`server`]: a small level-triggered epoll loop and the distribution models
//!   built from it (`distribute-bench-server`): one `SO_REUSEPORT` socket per
//!   process, one shared socket with and without `EPOLLEXCLUSIVE`, an acceptor
//!   thread handing fds to workers, a single thread, and socket activation
//!   (`$LISTEN_FDS`, listening or already accepted sockets).
//! * [`load`]: an open-loop load generator (`distribute-bench-load`): requests
//!   are scheduled at a fixed rate and latency is measured from the intended send
//!   time, so a stalled server cannot hide its stall (no coordinated omission).
//! * [`report`]: the JSON shapes the load generator prints and xtask reads.

pub mod handler;
pub mod load;
pub mod report;
pub mod server;

use std::io;

/// Pins the calling thread (and the children it forks later) to `cpus`.
pub fn pin_to(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Parses a CPU list like `1`, `0,1` or `0-3`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// The calling thread's kernel id (equal to the PID for a single-threaded process).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// `Err(last_os_error)` when `rc < 0`.
pub(crate) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
