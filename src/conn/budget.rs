//! The ledger behind volume budgets (issue #20): the rows and bytes each identity read under
//! each rule, in one-minute buckets over the last day, so that a rolling hour's or day's usage
//! can be summed and compared with a budget, and a refusal can say when the budget frees up.
//!
//! Memory is bounded twice: a key keeps at most a day of buckets (1,440), older ones are dropped
//! as it is fed; and the ledger tracks at most `max_keys` keys. When it is full, keys idle for a
//! day are dropped first; if none is, the new key is not tracked and [`Ledger::check`] refuses
//! its budgeted reads ([`Exceeded::Full`]): an untracked identity never reads past its budget
//! (fail closed).
//!
//! An approver may raise a key's budget for a while ([`Ledger::raise`]): the raise's rows and
//! bytes add to every limit of that key's budget until it ends. A key keeps at most
//! [`MAX_RAISES`] raises; past that, the one ending first is dropped (less allowance, never more).
//!
//! The ledger does no IO and keeps no clock: every call is given `now`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One bucket's width.
const BUCKET: Duration = Duration::from_secs(60);

/// The longest window; buckets older than this are dropped.
const DAY_BUCKETS: u64 = 24 * 60;

/// Raises kept per key.
pub const MAX_RAISES: usize = 8;

/// Whose usage: the identity (OIDC issuer and subject) and the rule whose budget it draws on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub issuer: String,
    pub subject: String,
    pub rule: String,
}

/// The rolling window a budget is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    fn buckets(self) -> u64 {
        match self {
            Window::Hour => 60,
            Window::Day => DAY_BUCKETS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// A budget: rows and/or bytes per rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub per: Window,
}

/// What a key used within a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    pub rows: u64,
    pub bytes: u64,
}

/// Why a budgeted read is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    /// The window's usage reached the budget; it frees up (usage falls below it) at `frees_at`.
    UsedUp {
        what: &'static str,
        /// The budget's limit as written.
        limit: u64,
        /// The limit with the raises in force; `limit` when there are none.
        raised: u64,
        used: u64,
        per: Window,
        frees_at: SystemTime,
    },
    /// The ledger is full and does not track this key, so its usage is unknown.
    Full,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::UsedUp {
                what,
                limit,
                raised,
                used,
                per,
                frees_at,
            } => {
                let secs = frees_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
                write!(f, "budget of {limit} {what} per {}", per.name())?;
                if raised != limit {
                    write!(f, " (raised to {raised} by approval)")?;
                }
                write!(
                    f,
                    " used up ({used} {what}); it frees up from {h:02}:{m:02} UTC"
                )
            }
            Exceeded::Full => {
                f.write_str("budget usage cannot be tracked for this identity (the ledger is full)")
            }
        }
    }
}

/// One key's buckets, oldest first: (minute since the epoch, rows, bytes).
#[derive(Debug, Default)]
struct Usage {
    buckets: VecDeque<(u64, u64, u64)>,
    raises: Vec<Raise>,
}

/// An approver's raise: rows and bytes added to the key's limits until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raise {
    pub rows: u64,
    pub bytes: u64,
    pub until: SystemTime,
}

impl Usage {
    fn prune(&mut self, minute: u64) {
        while let Some(&(m, _, _)) = self.buckets.front() {
            if m + DAY_BUCKETS > minute {
                break;
            }
            self.buckets.pop_front();
        }
    }

    /// The rows (`rows == true`) or bytes the raises in force at `t` add.
    fn raised_at(&self, t: SystemTime, rows: bool) -> u64 {
        self.raises
            .iter()
            .filter(|r| r.until > t)
            .map(|r| if rows { r.rows } else { r.bytes })
            .fold(0, u64::saturating_add)
    }

    /// Buckets within `window` of `minute` (the current minute counts as one of them).
    fn within(&self, window: Window, minute: u64) -> impl Iterator<Item = &(u64, u64, u64)> {
        self.buckets
            .iter()
            .filter(move |(m, _, _)| *m + window.buckets() > minute && *m <= minute)
    }
}

/// Per-key usage over the last day, bounded in keys and buckets.
#[derive(Debug)]
pub struct Ledger {
    keys: HashMap<Key, Usage>,
    max_keys: usize,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BUCKET.as_secs()
}

impl Ledger {
    pub fn new(max_keys: usize) -> Self {
        Ledger {
            keys: HashMap::new(),
            max_keys,
        }
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds what a statement read at `now`. `false` when the key is new and the ledger full
    /// even after dropping the keys idle for a day: the usage is then not tracked.
    pub fn add(&mut self, key: &Key, now: SystemTime, rows: u64, bytes: u64) -> bool {
        let minute = minute_of(now);
        if !self.make_room(key, minute) {
            return false;
        }
        let usage = self.keys.entry(key.clone()).or_default();
        usage.prune(minute);
        match usage.buckets.back_mut() {
            Some((m, r, b)) if *m == minute => {
                *r = r.saturating_add(rows);
                *b = b.saturating_add(bytes);
            }
            _ => usage.buckets.push_back((minute, rows, bytes)),
        }
        true
    }

    /// Raises `key`'s budget by `raise` until `raise.until`. `false` when the key is new and
    /// the ledger full: the raise is then not kept.
    pub fn raise(&mut self, key: &Key, now: SystemTime, raise: Raise) -> bool {
        if !self.make_room(key, minute_of(now)) {
            return false;
        }
        let usage = self.keys.entry(key.clone()).or_default();
        usage.raises.retain(|r| r.until > now);
        if usage.raises.len() >= MAX_RAISES
            && let Some(first) = (0..usage.raises.len()).min_by_key(|&i| usage.raises[i].until)
        {
            usage.raises.swap_remove(first);
        }
        usage.raises.push(raise);
        true
    }

    /// The raises of `key` in force at `now`.
    pub fn raises(&self, key: &Key, now: SystemTime) -> Vec<Raise> {
        self.keys.get(key).map_or_else(Vec::new, |u| {
            u.raises.iter().filter(|r| r.until > now).copied().collect()
        })
    }

    /// Whether `key` is tracked or can be: when the ledger is full, the keys idle for a day
    /// (no bucket, no raise in force) are dropped first.
    fn make_room(&mut self, key: &Key, minute: u64) -> bool {
        if self.keys.contains_key(key) || self.keys.len() < self.max_keys {
            return true;
        }
        let now = UNIX_EPOCH + BUCKET * u32::try_from(minute).unwrap_or(u32::MAX);
        self.keys.retain(|_, u| {
            u.prune(minute);
            u.raises.retain(|r| r.until > now);
            !u.buckets.is_empty() || !u.raises.is_empty()
        });
        self.keys.len() < self.max_keys
    }

    /// What `key` used in the `window` ending at `now`.
    pub fn used(&self, key: &Key, window: Window, now: SystemTime) -> Used {
        let minute = minute_of(now);
        let mut used = Used::default();
        if let Some(u) = self.keys.get(key) {
            for (_, r, b) in u.within(window, minute) {
                used.rows = used.rows.saturating_add(*r);
                used.bytes = used.bytes.saturating_add(*b);
            }
        }
        used
    }

    /// Whether `key` may read more under `budget` at `now`: refused once the window's usage
    /// has reached a limit (with the raises in force), with the time the usage falls back
    /// below the limit in force then (a raise may have ended by then).
    pub fn check(&self, key: &Key, budget: &Budget, now: SystemTime) -> Result<(), Exceeded> {
        let Some(usage) = self.keys.get(key) else {
            return if self.keys.len() >= self.max_keys {
                Err(Exceeded::Full)
            } else {
                Ok(())
            };
        };
        let minute = minute_of(now);
        let used = self.used(key, budget.per, now);
        type Of = fn(&(u64, u64, u64)) -> u64;
        let limits: [(&'static str, Option<u64>, u64, Of, bool); 2] = [
            ("rows", budget.rows, used.rows, |b| b.1, true),
            ("bytes", budget.bytes, used.bytes, |b| b.2, false),
        ];
        let at = |minute: u64| UNIX_EPOCH + BUCKET * u32::try_from(minute).unwrap_or(u32::MAX);
        for (what, limit, used, of, rows) in limits {
            let Some(limit) = limit else { continue };
            let raised = limit.saturating_add(usage.raised_at(now, rows));
            if used < raised {
                continue;
            }
            // The oldest buckets leave the window first: the budget frees up once enough of
            // them have left for the rest to fall below the limit in force at that time.
            let mut left = used;
            let mut frees = minute + 1;
            for bucket in usage.within(budget.per, minute) {
                left = left.saturating_sub(of(bucket));
                frees = bucket.0 + budget.per.buckets();
                if left < limit.saturating_add(usage.raised_at(at(frees), rows)) {
                    break;
                }
            }
            return Err(Exceeded::UsedUp {
                what,
                limit,
                raised,
                used,
                per: budget.per,
                frees_at: at(frees),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(subject: &str) -> Key {
        Key {
            issuer: "https://idp".into(),
            subject: subject.into(),
            rule: "agents-read".into(),
        }
    }

    fn at(minute: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60 + 30)
    }

    const HOURLY: Budget = Budget {
        rows: Some(1000),
        bytes: None,
        per: Window::Hour,
    };

    #[test]
    fn an_hour_rolls_bucket_by_bucket_and_says_when_it_frees_up() {
        let mut l = Ledger::new(8);
        let k = key("agent");
        assert!(l.add(&k, at(600), 400, 10));
        assert!(l.add(&k, at(610), 400, 10));
        assert_eq!(l.check(&k, &HOURLY, at(615)), Ok(()));
        assert!(l.add(&k, at(620), 300, 10));
        assert_eq!(l.used(&k, Window::Hour, at(620)).rows, 1100);
        let Err(Exceeded::UsedUp { used, frees_at, .. }) = l.check(&k, &HOURLY, at(630)) else {
            panic!("the hour's 1100 rows exceed 1000");
        };
        assert_eq!(used, 1100);
        // Minute 600's 400 rows leave at minute 660, leaving 700 < 1000.
        assert_eq!(frees_at, UNIX_EPOCH + Duration::from_secs(660 * 60));
        assert_eq!(
            l.check(&k, &HOURLY, at(630)).unwrap_err().to_string(),
            "budget of 1000 rows per hour used up (1100 rows); it frees up from 11:00 UTC"
        );
        assert!(l.check(&k, &HOURLY, at(659)).is_err());
        assert_eq!(l.check(&k, &HOURLY, at(660)), Ok(()));
        assert_eq!(l.used(&k, Window::Hour, at(660)).rows, 700);
        // The day still counts them all; another identity is apart.
        assert_eq!(l.used(&k, Window::Day, at(660)).rows, 1100);
        assert_eq!(l.used(&key("other"), Window::Day, at(660)), Used::default());
    }

    #[test]
    fn bytes_and_a_day_window() {
        let mut l = Ledger::new(8);
        let k = key("agent");
        let daily = Budget {
            rows: None,
            bytes: Some(5000),
            per: Window::Day,
        };
        l.add(&k, at(0), 1, 3000);
        l.add(&k, at(700), 1, 3000);
        let Err(Exceeded::UsedUp { what, frees_at, .. }) = l.check(&k, &daily, at(800)) else {
            panic!("6000 bytes exceed 5000");
        };
        assert_eq!(what, "bytes");
        assert_eq!(frees_at, UNIX_EPOCH + Duration::from_secs(1440 * 60));
        assert_eq!(l.check(&k, &daily, at(1440)), Ok(()));
    }

    #[test]
    fn an_approvers_raise_lets_reads_through_until_it_ends() {
        let mut l = Ledger::new(8);
        let k = key("agent");
        l.add(&k, at(600), 1200, 10);
        assert!(l.check(&k, &HOURLY, at(601)).is_err());
        let raise = Raise {
            rows: 500,
            bytes: 0,
            until: at(630),
        };
        assert!(l.raise(&k, at(601), raise));
        assert_eq!(l.raises(&k, at(601)), vec![raise]);
        assert_eq!(l.check(&k, &HOURLY, at(601)), Ok(()));
        l.add(&k, at(602), 400, 10);
        // 1600 rows against 1000 + 500: used up; the raise ends at 10:30, before the hour's
        // rows leave (minute 600's at 11:00, leaving 400 < 1000).
        let err = l.check(&k, &HOURLY, at(603)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget of 1000 rows per hour (raised to 1500 by approval) used up (1600 rows); it frees up from 11:00 UTC"
        );
        // Past the raise, the budget as written applies again.
        l.add(&k, at(640), 0, 0);
        assert!(l.raises(&k, at(640)).is_empty());
        assert!(matches!(
            l.check(&k, &HOURLY, at(640)),
            Err(Exceeded::UsedUp { raised: 1000, .. })
        ));
        // At most MAX_RAISES are kept; the ones ending first go.
        for i in 0..MAX_RAISES as u64 + 2 {
            l.raise(
                &k,
                at(641),
                Raise {
                    rows: 1,
                    bytes: 1,
                    until: at(700 + i),
                },
            );
        }
        let kept = l.raises(&k, at(641));
        assert_eq!(kept.len(), MAX_RAISES);
        assert!(kept.iter().all(|r| r.until >= at(702)));
    }

    #[test]
    fn memory_is_bounded_in_buckets_and_keys() {
        let mut l = Ledger::new(2);
        let k = key("a");
        for minute in 0..3 * DAY_BUCKETS {
            l.add(&k, at(minute), 1, 1);
        }
        assert_eq!(l.keys[&k].buckets.len() as u64, DAY_BUCKETS);
        assert_eq!(
            l.used(&k, Window::Day, at(3 * DAY_BUCKETS - 1)).rows,
            DAY_BUCKETS
        );
        assert!(l.add(&key("b"), at(3 * DAY_BUCKETS), 1, 1));
        // Full: a third identity is not tracked, and its budgeted reads are refused.
        assert!(!l.add(&key("c"), at(3 * DAY_BUCKETS), 1, 1));
        assert_eq!(l.len(), 2);
        assert_eq!(
            l.check(&key("c"), &HOURLY, at(3 * DAY_BUCKETS)),
            Err(Exceeded::Full)
        );
        // A day later "a" and "b" are idle and make room.
        assert!(l.add(&key("c"), at(5 * DAY_BUCKETS), 1, 1));
        assert_eq!(l.len(), 1);
    }
}
