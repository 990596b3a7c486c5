//! Who may hold a connection: the budgets of unauthenticated and authenticated connections.
//!
//! A connection is accepted into the **unauthenticated** budget (`limits.max_unauthenticated`,
//! and `limits.max_unauthenticated_per_client` from one address) and moves to the **session**
//! budget (`limits.max_connections`) only once its client has authenticated
//! ([`Ticket::admit`]). Nobody has to authenticate to fill the first budget, so it never refuses
//! a newcomer: when it is full, the oldest unauthenticated connection of the address holding
//! the most of them is dropped. A flood from a few addresses therefore only displaces its own
//! connections, and an agent logging in from elsewhere keeps its place; a flood cannot reach
//! the session budget at all. `limits.max_connections_per_client` caps everything one address
//! holds, authenticated or not.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Why a connection cannot have, or keep, its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its client address holds `max_connections_per_client` connections already.
    #[error("too many connections from this client address")]
    PerClient,
    /// Every session slot (`max_connections`) is taken by authenticated connections.
    #[error("too many sessions")]
    Full,
    /// It was dropped to make room for a newer unauthenticated connection.
    #[error("dropped to make room for newer unauthenticated connections")]
    Evicted,
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// The connection budgets of one daemon, shared by its listeners.
pub struct Admission {
    sessions: Arc<Semaphore>,
    max_sessions: usize,
    max_waiting: usize,
    max_waiting_per_client: usize,
    max_per_client: usize,
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Unauthenticated connections, by address, oldest first.
    waiting: HashMap<IpAddr, VecDeque<Waiting>>,
    waiting_total: usize,
    /// Connections of any kind, by address.
    per_client: HashMap<IpAddr, usize>,
}

struct Waiting {
    seq: u64,
    evict: Arc<Notify>,
}

/// A connection's place: unauthenticated until [`Ticket::admit`], then a session slot. Dropping
/// it gives the place back.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    seq: u64,
    evict: Arc<Notify>,
    session: Option<OwnedSemaphorePermit>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Arc<Admission> {
        Arc::new(Admission {
            sessions: Arc::new(Semaphore::new(limits.max_connections)),
            max_sessions: limits.max_connections,
            max_waiting: limits.unauthenticated_budget(),
            max_waiting_per_client: limits.max_unauthenticated_per_client,
            max_per_client: limits.max_connections_per_client,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`, unauthenticated. Refused only when its address
    /// holds `max_connections_per_client` already; a full unauthenticated budget makes room
    /// by dropping an older unauthenticated connection instead.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::ShuttingDown);
        }
        let mut state = self.lock();
        let held = state.per_client.get(&ip).copied().unwrap_or(0);
        if held >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        let own = state.waiting.get(&ip).map_or(0, VecDeque::len);
        if own >= self.max_waiting_per_client {
            state.evict_oldest_of(ip);
        } else if state.waiting_total >= self.max_waiting {
            state.evict_from_largest();
        }
        *state.per_client.entry(ip).or_insert(0) += 1;
        let seq = state.next_seq;
        state.next_seq += 1;
        let evict = Arc::new(Notify::new());
        state.waiting.entry(ip).or_default().push_back(Waiting {
            seq,
            evict: Arc::clone(&evict),
        });
        state.waiting_total += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            ip,
            seq,
            evict,
            session: None,
        })
    }

    /// Drops every unauthenticated connection and admits no more (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut state = self.lock();
        for (_, queue) in state.waiting.drain() {
            for w in queue {
                w.evict.notify_one();
            }
        }
        state.waiting_total = 0;
    }

    /// Authenticated connections open now.
    pub fn sessions_open(&self) -> usize {
        self.max_sessions - self.sessions.available_permits()
    }

    /// Unauthenticated connections open now.
    pub fn unauthenticated_open(&self) -> usize {
        self.lock().waiting_total
    }

    /// Waits until every session slot is free again (or `limit` passes): shutdown's drain.
    pub async fn all_sessions_closed(&self, limit: std::time::Duration) -> bool {
        let all = self.max_sessions as u32;
        match tokio::time::timeout(limit, self.sessions.acquire_many(all)).await {
            Ok(Ok(permits)) => {
                // Keep them: nothing may start a session any more.
                permits.forget();
                true
            }
            _ => false,
        }
    }
}

impl State {
    fn evict_oldest_of(&mut self, ip: IpAddr) {
        if let Some(queue) = self.waiting.get_mut(&ip)
            && let Some(w) = queue.pop_front()
        {
            w.evict.notify_one();
            self.waiting_total -= 1;
            if queue.is_empty() {
                self.waiting.remove(&ip);
            }
            metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "evicted").increment(1);
        }
    }

    /// Drops the oldest unauthenticated connection of the address that holds the most (the
    /// oldest of them on a tie), so one address's flood displaces its own connections first.
    fn evict_from_largest(&mut self) {
        let largest = self
            .waiting
            .iter()
            .filter_map(|(ip, q)| q.front().map(|w| (q.len(), std::cmp::Reverse(w.seq), *ip)))
            .max()
            .map(|(_, _, ip)| ip);
        if let Some(ip) = largest {
            self.evict_oldest_of(ip);
        }
    }

    /// Takes `seq` out of the unauthenticated connections; false if it was no longer there
    /// (evicted).
    fn leave_waiting(&mut self, ip: IpAddr, seq: u64) -> bool {
        let Some(queue) = self.waiting.get_mut(&ip) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.seq == seq) else {
            return false;
        };
        queue.remove(at);
        if queue.is_empty() {
            self.waiting.remove(&ip);
        }
        self.waiting_total -= 1;
        true
    }
}

impl Ticket {
    /// Completes when this connection is dropped to make room (or at shutdown) while it is
    /// still unauthenticated. Never completes once it is admitted.
    pub fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let evict = Arc::clone(&self.evict);
        async move { evict.notified().await }
    }

    /// The client has authenticated: the connection leaves the unauthenticated budget for a
    /// session slot. `Err(Full)` when `max_connections` sessions are open; the wire tells the
    /// client (FATAL 53300, ERR 1040) and closes.
    pub fn admit(&mut self) -> Result<(), Refused> {
        if self.session.is_some() {
            return Ok(());
        }
        let admission = &self.admission;
        let mut state = admission.lock();
        if !state.leave_waiting(self.ip, self.seq) {
            return Err(if admission.closed.load(Ordering::Acquire) {
                Refused::ShuttingDown
            } else {
                Refused::Evicted
            });
        }
        match Arc::clone(&admission.sessions).try_acquire_owned() {
            Ok(permit) => {
                self.session = Some(permit);
                Ok(())
            }
            Err(_) => {
                // Its place among the unauthenticated is gone either way: it is closing.
                if admission.closed.load(Ordering::Acquire) {
                    return Err(Refused::ShuttingDown);
                }
                metrics::counter!(crate::metrics::CONNECTIONS, "outcome" => "refused").increment(1);
                Err(Refused::Full)
            }
        }
    }

    /// Whether the client has authenticated and holds a session slot.
    pub fn admitted(&self) -> bool {
        self.session.is_some()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if self.session.is_none() {
            state.leave_waiting(self.ip, self.seq);
        }
        if let Some(n) = state.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.per_client.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(sessions: usize, waiting: usize, waiting_per_client: usize) -> Limits {
        Limits {
            max_connections: sessions,
            max_unauthenticated: Some(waiting),
            max_unauthenticated_per_client: waiting_per_client,
            ..Limits::default()
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn is_evicted(t: &Ticket) -> bool {
        let fut = t.evicted();
        futures_util::FutureExt::now_or_never(Box::pin(fut)).is_some()
    }

    #[test]
    fn a_full_budget_drops_the_oldest_of_the_largest_address() {
        let a = Admission::new(&limits(10, 4, 10));
        let flood: Vec<Ticket> = (0..3).map(|_| a.enter(ip(2)).unwrap()).collect();
        let agent = a.enter(ip(9)).unwrap();
        // Full: the next newcomer displaces ip 2's oldest, not the agent.
        let newcomer = a.enter(ip(2)).unwrap();
        assert!(is_evicted(&flood[0]));
        assert!(!is_evicted(&flood[1]) && !is_evicted(&agent) && !is_evicted(&newcomer));
        assert_eq!(a.unauthenticated_open(), 4);
        drop(flood);
        assert_eq!(a.unauthenticated_open(), 2);
    }

    #[test]
    fn one_address_displaces_only_its_own() {
        let a = Admission::new(&limits(10, 100, 2));
        let other = a.enter(ip(3)).unwrap();
        let first = a.enter(ip(2)).unwrap();
        let _second = a.enter(ip(2)).unwrap();
        let _third = a.enter(ip(2)).unwrap();
        assert!(is_evicted(&first));
        assert!(!is_evicted(&other));
    }

    #[test]
    fn admitted_connections_use_the_session_budget() {
        let a = Admission::new(&limits(1, 1, 1));
        let mut one = a.enter(ip(2)).unwrap();
        one.admit().unwrap();
        assert_eq!((a.sessions_open(), a.unauthenticated_open()), (1, 0));
        // The unauthenticated budget is free again, and a session slot is not taken from it.
        let mut two = a.enter(ip(3)).unwrap();
        assert!(!is_evicted(&one));
        assert_eq!(two.admit(), Err(Refused::Full));
        drop(one);
        assert_eq!(a.sessions_open(), 0);
        let mut three = a.enter(ip(3)).unwrap();
        three.admit().unwrap();
        // An evicted connection cannot become a session.
        let mut four = a.enter(ip(4)).unwrap();
        let _five = a.enter(ip(5)).unwrap();
        assert_eq!(four.admit(), Err(Refused::Evicted));
    }

    #[test]
    fn per_client_limit_counts_every_connection() {
        let a = Admission {
            max_per_client: 2,
            ..Arc::into_inner(Admission::new(&limits(10, 10, 10))).unwrap()
        };
        let a = Arc::new(a);
        let mut one = a.enter(ip(2)).unwrap();
        one.admit().unwrap();
        let _two = a.enter(ip(2)).unwrap();
        assert_eq!(a.enter(ip(2)).err(), Some(Refused::PerClient));
        drop(one);
        assert!(a.enter(ip(2)).is_ok());
    }

    #[test]
    fn close_drops_the_unauthenticated() {
        let a = Admission::new(&limits(10, 10, 10));
        let mut t = a.enter(ip(2)).unwrap();
        a.close();
        assert!(is_evicted(&t));
        assert_eq!(t.admit(), Err(Refused::ShuttingDown));
        assert_eq!(a.enter(ip(2)).err(), Some(Refused::ShuttingDown));
    }
}
