//! Slows down repeated login failures from one address: each consecutive failure doubles the
//! delay before the refusal is sent (from `failure_delay` up to `max_failure_delay`); a success
//! or ten quiet minutes clear the count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FORGET_AFTER: Duration = Duration::from_secs(600);
const MAX_TRACKED: usize = 100_000;

pub struct Throttle {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(base: Duration, max: Duration) -> Throttle {
        Throttle {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `ip` and returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
        let doublings = (entry.0 - 1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_failure_up_to_the_cap_and_resets_on_success() {
        let t = Throttle::new(Duration::from_millis(100), Duration::from_millis(700));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<u128> = (0..5).map(|_| t.failed(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 700, 700]);
        assert_eq!(
            t.failed(b).as_millis(),
            100,
            "other addresses are not affected"
        );
        t.succeeded(a);
        assert_eq!(t.failed(a).as_millis(), 100);
    }
}
