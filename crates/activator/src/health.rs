//! The health check: new connections go around an instance that stopped
//! accepting.
//!
//! With plain `SO_REUSEPORT` a hung instance (a deadlock, a long pause, a
//! request loop that never returns to `accept()`) keeps getting its 1/N of
//! the new connections; they wait in its queue, and once that is full the
//! kernel drops SYNs (datagrams) meant for it. Every config gets a monitor
//! task that samples the queues of its running instances ([`QueueSample`]: the
//! accept queue from `TCP_INFO`, the receive queue from `SO_MEMINFO`):
//!
//! - **stuck**: a queue stayed non-empty without shrinking for
//!   `StuckTimeoutSec=` (default [`DEFAULT_STUCK_TIMEOUT`]), or it is full
//!   (datagrams dropped) on two samples in a row without shrinking. The slot is
//!   marked (`stuck` on D-Bus, since when and why; one journal line) and the
//!   group's steering program leaves its sockets out ([`ServedSocket::apply_steering`],
//!   any `Steering=`). Nothing queued is touched: the connections stay in the
//!   queue, nothing is reset.
//! - **recovered**: every queue of the slot is empty again (the instance
//!   accepted what was queued): it gets its share back.
//! - **restart** (`StuckRestartSec=`, off by default): still stuck after that
//!   long, the instance is killed and started again; the queue survives in
//!   the activator's socket and the new instance serves it.
//!
//! The monitor samples (every [`tick`] of the timeout) only while an instance
//! of the config runs *and* something waits in a queue. When every queue of
//! the running instances is empty it goes dormant: it waits in epoll for one
//! of their sockets to become readable (something queued again), and then
//! samples from the next tick on; with no instance running it waits for a
//! slot to change state. So idle instances, and an idle activator, cost no
//! wakeups, and under load it wakes at most twice per tick, however many
//! connections arrive.

use crate::served::ServedSocket;
use crate::sockets::{queue_sample, QueueSample};
use crate::supervisor::{SlotCommand, SlotState, Stuck, SystemdLink};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// `StuckTimeoutSec=` default: reacts well within a second, yet an instance
/// that accepts at all empties its queue, or at least shrinks it, far more
/// often than that.
pub const DEFAULT_STUCK_TIMEOUT: Duration = Duration::from_millis(500);

/// The check's period for a timeout: a quarter of it, within 10–250 ms.
pub fn tick(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// `Some(duration)` of a `*Sec=` setting in microseconds, `None` when off
/// (`0` or `infinity`).
fn enabled(usec: u64) -> Option<Duration> {
    (usec != 0 && usec != u64::MAX).then(|| Duration::from_micros(usec))
}

/// What the monitor remembers about one socket between samples.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    last: QueueSample,
    /// Since when the queue has been non-empty without shrinking.
    waiting_since: Option<Instant>,
    /// Whether the previous sample was full.
    was_full: bool,
}

/// What the monitor remembers about one slot.
#[derive(Debug, Default)]
struct SlotTrack {
    sockets: Vec<Track>,
    /// The restart of this episode was asked for.
    restarted: bool,
}

/// The verdict on one slot after a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing waits, or the queue moved.
    Fine,
    /// Something waits, not for long enough to say.
    Waiting,
    /// Stuck: since when (monotonic) and why.
    Stuck(Instant, String),
}

/// Takes a new sample of each socket of a slot and judges it.
fn judge(
    track: &mut SlotTrack,
    samples: &[(QueueSample, bool)],
    now: Instant,
    timeout: Duration,
) -> Verdict {
    track.sockets.resize(samples.len(), Track::default());
    let mut verdict = Verdict::Fine;
    for (t, &(s, datagram)) in track.sockets.iter_mut().zip(samples) {
        let dropped = s.drops > t.last.drops;
        let full = s.full() || dropped;
        if s.depth == 0 {
            t.waiting_since = None;
        } else if s.depth < t.last.depth {
            // It drains: the instance is taking from the queue.
            t.waiting_since = Some(now);
        } else if t.waiting_since.is_none() {
            t.waiting_since = Some(now);
        }
        let was_full = t.was_full;
        t.was_full = full;
        t.last = s;
        let Some(since) = t.waiting_since else {
            continue;
        };
        let waited = now.duration_since(since);
        let what = if datagram {
            format!(
                "receive queue {} of {} bytes",
                s.depth,
                s.limit.max(s.depth)
            )
        } else {
            format!(
                "accept queue {} (Backlog= {})",
                s.depth,
                s.limit.saturating_sub(1)
            )
        };
        let v = if waited >= timeout {
            Verdict::Stuck(
                since,
                format!(
                    "{what} has not drained for {} (StuckTimeoutSec={})",
                    fmt_ms(waited),
                    fmt_ms(timeout)
                ),
            )
        } else if full && was_full && waited > Duration::ZERO {
            let how = if datagram && dropped {
                "full, datagrams dropped"
            } else {
                "full, new connections dropped"
            };
            Verdict::Stuck(
                since,
                format!("{what}: {how}, not drained for {}", fmt_ms(waited)),
            )
        } else {
            Verdict::Waiting
        };
        verdict = match (verdict, v) {
            (Verdict::Stuck(a, w), _) => Verdict::Stuck(a, w),
            (_, v @ Verdict::Stuck(..)) => v,
            (_, Verdict::Waiting) | (Verdict::Waiting, _) => Verdict::Waiting,
            _ => Verdict::Fine,
        };
    }
    verdict
}

/// Waits until a connection or datagram is queued on a socket of `slots`.
///
/// Registers duplicates of the sockets: epoll takes an fd once, and the
/// slot's own task registers the socket itself as soon as its instance exits
/// (which may happen while this waits).
async fn wait_any_queued(slots: &[Rc<crate::supervisor::Slot>]) {
    use std::os::fd::AsFd;
    use tokio::io::unix::AsyncFd;
    let watches: Vec<AsyncFd<std::os::fd::OwnedFd>> = slots
        .iter()
        .flat_map(|s| s.sockets.iter())
        .filter_map(|b| b.socket.as_fd().try_clone_to_owned().ok())
        // SAFETY: the AsyncFd owns the duplicate, which stays open as long
        // as it is registered.
        .filter_map(|fd| unsafe {
            AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok()
        })
        .collect();
    if watches.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let (res, i, _) =
            futures_util::future::select_all(watches.iter().map(|w| Box::pin(w.readable()))).await;
        let Ok(mut guard) = res else { return };
        // A socket shut down meanwhile (its slot is being closed: a shrink,
        // a removal, a replacement) stays "read closed" for tokio, which
        // `clear_ready()` does not clear: looping here would find it ready
        // again at once, forever, without yielding, and freeze the whole
        // activator. Back to the monitor, which samples again and no longer
        // watches a draining slot.
        if guard.ready().is_read_closed() {
            return;
        }
        // Readiness may be stale; ask the kernel.
        if crate::sockets::queued(watches[i].get_ref().as_fd()).unwrap_or(true) {
            return;
        }
        guard.clear_ready();
    }
}

fn fmt_ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{}s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Watches the running instances of `group` (see the module docs); ends when
/// the group is removed.
pub async fn monitor(group: Weak<ServedSocket>, shared: Rc<SystemdLink>) {
    let mut tracks: Vec<SlotTrack> = Vec::new();
    loop {
        let Some(g) = group.upgrade() else { return };
        if g.common.closed.get() {
            return;
        }
        let (timeout, restart_after) = {
            let spec = g.spec();
            let o = &spec.options;
            (
                match o.stuck_timeout_usec {
                    None => Some(DEFAULT_STUCK_TIMEOUT),
                    Some(u) => enabled(u),
                },
                o.stuck_restart_usec.and_then(enabled),
            )
        };
        let now = Instant::now();
        let mut changed = false;
        let mut any_running = false;
        // Whether every queue of every watched slot was empty at this sample.
        let mut all_empty = true;
        let mut watched_slots = Vec::new();
        let slots: Vec<_> = g
            .slots
            .borrow()
            .iter()
            .map(|h| (h.slot.clone(), h.commands.clone()))
            .collect();
        tracks.resize_with(slots.len(), SlotTrack::default);
        for ((slot, commands), track) in slots.iter().zip(tracks.iter_mut()) {
            let (state, draining, stuck) = {
                let st = slot.status.borrow();
                (st.state, st.draining, st.stuck.is_some())
            };
            let watched = state == SlotState::Running && !draining && timeout.is_some();
            if state == SlotState::Running {
                any_running = true;
            }
            if !watched {
                *track = SlotTrack::default();
                if stuck {
                    slot.status.borrow_mut().stuck = None;
                    tracing::info!(
                        "{}: no longer counted as stuck ({})",
                        slot.unit,
                        if draining {
                            "draining"
                        } else if timeout.is_none() {
                            "StuckTimeoutSec= is off"
                        } else {
                            "the instance is gone"
                        }
                    );
                    changed = true;
                }
                continue;
            }
            let timeout = timeout.unwrap_or(DEFAULT_STUCK_TIMEOUT);
            let samples: Vec<(QueueSample, bool)> = slot
                .sockets
                .iter()
                .map(|s| {
                    let datagram = s.listen.kind == distribute_config::ListenKind::Datagram;
                    (queue_sample(&s.socket, s.listen.kind), datagram)
                })
                .collect();
            let empty = samples.iter().all(|(s, _)| s.depth == 0);
            all_empty &= empty;
            watched_slots.push(slot.clone());
            let verdict = judge(track, &samples, now, timeout);
            if stuck {
                if empty {
                    let since = slot
                        .status
                        .borrow_mut()
                        .stuck
                        .take()
                        .map(|s| s.since.elapsed().unwrap_or_default());
                    track.restarted = false;
                    tracing::info!(
                        "{}: accepting again (stuck for {}); it gets new connections again",
                        slot.unit,
                        fmt_ms(since.unwrap_or_default())
                    );
                    changed = true;
                } else if let (Some(after), Verdict::Stuck(since, _)) = (restart_after, &verdict) {
                    if !track.restarted && now.duration_since(*since) >= after {
                        track.restarted = true;
                        tracing::warn!(
                            "{}: stuck for {} (StuckRestartSec={}); killing it, a new instance serves its queue",
                            slot.unit,
                            fmt_ms(now.duration_since(*since)),
                            fmt_ms(after)
                        );
                        let _ = commands.send(SlotCommand::KillAndRestart);
                    }
                }
            } else if let Verdict::Stuck(since, why) = verdict {
                let wall = SystemTime::now()
                    .checked_sub(now.duration_since(since))
                    .unwrap_or_else(SystemTime::now);
                let others = g.active().saturating_sub(1);
                tracing::warn!(
                    "{}: not accepting: {why}; steering new connections to the other {others} instance(s)",
                    slot.unit
                );
                slot.status.borrow_mut().stuck = Some(Stuck { since: wall, why });
                track.restarted = false;
                changed = true;
            }
        }
        if changed {
            g.apply_steering();
            (shared.on_change)(&g.name);
        }
        if !any_running || timeout.is_none() {
            let common = g.common.clone();
            drop(g);
            common.health.notified().await;
            continue;
        }
        let period = tick(timeout.unwrap_or(DEFAULT_STUCK_TIMEOUT));
        let common = g.common.clone();
        drop(g);
        if all_empty && watched_slots.is_empty() {
            // Only draining instances run: nothing to watch.
            common.health.notified().await;
            continue;
        }
        if all_empty {
            // Dormant until something is queued again (or a slot changes).
            let readable = wait_any_queued(&watched_slots);
            tokio::select! {
                _ = readable => {}
                _ = common.health.notified() => {}
            }
            drop(watched_slots);
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `wait_any_queued` checks `is_read_closed()`: a listener shut down
    /// while a duplicate of it is watched (a slot closed during a removal,
    /// shrink or replacement) is ready for tokio again right after
    /// `clear_ready()`, while the kernel says nothing is queued. Without the
    /// check the loop spun inside one poll and froze the activator (seen as a
    /// removal that never finished, on 257 under load).
    #[tokio::test(flavor = "current_thread")]
    async fn a_shut_down_listener_stays_ready_but_has_nothing_queued() {
        use socket2::{Domain, Socket, Type};
        use std::os::fd::AsFd;
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(16).unwrap();
        s.set_nonblocking(true).unwrap();
        let dup = s.as_fd().try_clone_to_owned().unwrap();
        // SAFETY: the AsyncFd owns the duplicate for as long as it is registered.
        let watch = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
        }
        .unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
        for _ in 0..3 {
            let mut guard = tokio::time::timeout(Duration::from_secs(1), watch.readable())
                .await
                .expect("ready at once")
                .unwrap();
            assert!(guard.ready().is_read_closed());
            assert!(!crate::sockets::queued(watch.get_ref().as_fd()).unwrap());
            guard.clear_ready();
        }
    }

    fn s(depth: u64) -> (QueueSample, bool) {
        (
            QueueSample {
                depth,
                limit: 129,
                drops: 0,
            },
            false,
        )
    }

    #[test]
    fn a_queue_that_moves_is_fine_one_that_does_not_is_stuck() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let timeout = Duration::from_millis(500);
        let mut t = SlotTrack::default();
        assert_eq!(judge(&mut t, &[s(0)], ms(0), timeout), Verdict::Fine);
        assert_eq!(judge(&mut t, &[s(3)], ms(100), timeout), Verdict::Waiting);
        // Shrinking restarts the clock.
        assert_eq!(judge(&mut t, &[s(2)], ms(550), timeout), Verdict::Waiting);
        assert_eq!(judge(&mut t, &[s(5)], ms(900), timeout), Verdict::Waiting);
        match judge(&mut t, &[s(9)], ms(1100), timeout) {
            Verdict::Stuck(since, why) => {
                assert_eq!(since, ms(550));
                assert!(why.contains("accept queue 9 (Backlog= 128)"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(judge(&mut t, &[s(0)], ms(1200), timeout), Verdict::Fine);
    }

    #[test]
    fn a_full_queue_is_stuck_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let timeout = Duration::from_secs(5);
        let mut t = SlotTrack::default();
        assert_eq!(judge(&mut t, &[s(129)], ms(0), timeout), Verdict::Waiting);
        assert!(matches!(
            judge(&mut t, &[s(129)], ms(100), timeout),
            Verdict::Stuck(..)
        ));
        // UDP: dropped datagrams count as full.
        let mut t = SlotTrack::default();
        let d = |depth, drops| {
            (
                QueueSample {
                    depth,
                    limit: 200_000,
                    drops,
                },
                true,
            )
        };
        assert_eq!(
            judge(&mut t, &[d(1000, 0)], ms(0), timeout),
            Verdict::Waiting
        );
        assert_eq!(
            judge(&mut t, &[d(190_000, 5)], ms(100), timeout),
            Verdict::Waiting
        );
        match judge(&mut t, &[d(190_000, 9)], ms(200), timeout) {
            Verdict::Stuck(_, why) => assert!(why.contains("datagrams dropped"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn tick_is_a_quarter_within_bounds() {
        assert_eq!(tick(DEFAULT_STUCK_TIMEOUT), Duration::from_millis(125));
        assert_eq!(tick(Duration::from_millis(8)), Duration::from_millis(10));
        assert_eq!(tick(Duration::from_secs(60)), Duration::from_millis(250));
    }
}
