//! Helper threads that run beside an extraction (the progress ticker and the early flusher):
//! they wait on a stop signal between rounds, so they end as soon as the work does instead of
//! finishing a sleep first.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Run `f` while a helper thread calls `tick(false)` every `period`; when `f` returns, the
/// helper wakes at once, calls `tick(true)` and ends.
pub(super) fn with_helper<T: Send>(
    period: Duration,
    mut tick: impl FnMut(bool) + Send,
    f: impl FnOnce() -> T + Send,
) -> T {
    let stop = StopSignal::default();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            loop {
                let finished = stop.wait(period);
                tick(finished);
                if finished {
                    return;
                }
            }
        });
        let out = f();
        stop.stop();
        out
    })
}

/// Set once, when the work the helpers accompany is over.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Wait up to `timeout`; true when the signal is (or becomes) set.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// Set the signal and wake every waiter.
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiter_wakes_when_stopped_not_when_its_timeout_ends() {
        let signal = StopSignal::default();
        assert!(!signal.wait(Duration::from_millis(1)));
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| assert!(signal.wait(Duration::from_secs(30))));
            std::thread::sleep(Duration::from_millis(20));
            signal.stop();
        });
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(signal.wait(Duration::from_secs(30)));
    }

    #[test]
    fn the_helper_ticks_while_the_work_runs_and_once_more_after() {
        let mut ticks = Vec::new();
        let t = Instant::now();
        let out = with_helper(
            Duration::from_millis(5),
            |finished| ticks.push(finished),
            || {
                std::thread::sleep(Duration::from_millis(50));
                7
            },
        );
        assert_eq!(out, 7);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(ticks.last(), Some(&true));
        assert_eq!(ticks.iter().filter(|f| **f).count(), 1, "{ticks:?}");
        assert!(ticks.len() >= 2, "no tick while the work ran: {ticks:?}");
    }
}
