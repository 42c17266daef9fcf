//! A stop signal for the helper threads that run beside an extraction (the progress ticker and
//! the early flusher): they wait on it between rounds, so they end as soon as the work does
//! instead of finishing a sleep first.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Set once, when the work the helpers accompany is over.
#[derive(Default)]
pub(super) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    /// Wait up to `timeout`; true when the signal is (or becomes) set.
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// Set the signal and wake every waiter.
    pub(super) fn stop(&self) {
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
}
