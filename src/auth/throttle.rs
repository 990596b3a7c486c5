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
        let ip = bucket(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
            if failures.len() >= MAX_TRACKED {
                // Under a flood from many addresses, start over rather than grow.
                failures.clear();
            }
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

    /// A successful login halves the address's count rather than clearing it, so one valid
    /// credential cannot be used to reset the delay between guesses of another.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(&bucket(ip)) {
            entry.0 /= 2;
        }
    }
}

/// IPv6 clients are counted per /64, which one host usually controls whole.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
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
        assert_eq!(
            t.failed(a).as_millis(),
            400,
            "a success halves the count (5 -> 2), then +1"
        );
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(t.failed(v6a).as_millis(), 100);
        assert_eq!(t.failed(v6b).as_millis(), 200, "same /64");
    }
}
