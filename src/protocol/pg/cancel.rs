//! Query cancellation across the proxy.
//!
//! Each client gets a BackendKeyData of tollgate's own (random process id and secret), never the
//! upstream one. A CancelRequest arrives on a new connection with those keys; the registry maps
//! them to the upstream server and its keys, and tollgate sends the cancel there. When the
//! connection holds a statement for approval, the cancel ends that statement instead (the
//! request is withdrawn): nothing of it reached the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Where a cancel for one client connection must go.
#[derive(Clone)]
pub struct UpstreamKey {
    /// The target whose server holds the backend.
    pub target: Arc<str>,
    pub process_id: i32,
    pub secret_key: i32,
}

/// Live connections' cancel keys, by tollgate's process id.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// One live connection: its secret, where its cancels go, how they reach a held statement.
struct Entry {
    secret: i32,
    upstream: UpstreamKey,
    interrupt: Arc<Interrupt>,
}

/// How a cancel reaches a connection's statement held for approval.
#[derive(Default)]
pub struct Interrupt {
    notify: Notify,
    holding: AtomicBool,
}

impl Interrupt {
    /// Marks the connection as holding a statement until the guard drops; the returned future
    /// completes when a cancel arrives meanwhile.
    pub fn hold(&self) -> (Holding<'_>, tokio::sync::futures::Notified<'_>) {
        // Registered before `holding` is set, so a cancel that sees it wakes this future.
        let cancelled = self.notify.notified();
        self.holding.store(true, Ordering::Release);
        (Holding(self), cancelled)
    }

    /// Cancels the held statement, if there is one.
    fn cancel(&self) -> bool {
        let held = self.holding.load(Ordering::Acquire);
        if held {
            self.notify.notify_waiters();
        }
        held
    }
}

/// A connection holding a statement for approval; see [`Interrupt::hold`].
pub struct Holding<'a>(&'a Interrupt);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.holding.store(false, Ordering::Release);
    }
}

/// Removes a connection's key when the connection ends.
pub struct Registration {
    registry: Arc<Registry>,
    process_id: i32,
    interrupt: Arc<Interrupt>,
}

impl Registration {
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// How cancels reach this connection's held statement.
    pub fn interrupt(&self) -> Arc<Interrupt> {
        Arc::clone(&self.interrupt)
    }

    /// The upstream backend's key, for tollgate's own cancels (a result cap reached).
    pub fn upstream(&self) -> Option<UpstreamKey> {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.process_id)
            .map(|e| e.upstream.clone())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.process_id);
    }
}

fn random_i32() -> i32 {
    let mut b = [0u8; 4];
    SystemRandom::new()
        .fill(&mut b)
        .expect("system random number generator failed");
    i32::from_be_bytes(b)
}

impl Registry {
    /// Registers a connection; returns its registration and the secret to hand the client.
    pub fn register(self: &Arc<Self>, upstream: UpstreamKey) -> (Registration, i32) {
        let secret = random_i32();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let process_id = loop {
            // Positive, like a real PID, and unique among live connections.
            let candidate = random_i32() & 0x7fff_ffff;
            if candidate != 0 && !entries.contains_key(&candidate) {
                break candidate;
            }
        };
        let interrupt = Arc::new(Interrupt::default());
        entries.insert(
            process_id,
            Entry {
                secret,
                upstream,
                interrupt: Arc::clone(&interrupt),
            },
        );
        (
            Registration {
                registry: Arc::clone(self),
                process_id,
                interrupt,
            },
            secret,
        )
    }

    /// The upstream key for a cancel request, if both process id and secret match.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<UpstreamKey> {
        self.entry(process_id, secret_key).map(|(key, _)| key)
    }

    /// A CancelRequest with tollgate's key: ends the connection's held statement if it holds
    /// one (`None` then: there is nothing to send upstream), else the upstream key to cancel.
    pub fn cancel(&self, process_id: i32, secret_key: i32) -> Option<UpstreamKey> {
        let (key, interrupt) = self.entry(process_id, secret_key)?;
        (!interrupt.cancel()).then_some(key)
    }

    fn entry(&self, process_id: i32, secret_key: i32) -> Option<(UpstreamKey, Arc<Interrupt>)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(&process_id)?;
        let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
            &entry.secret.to_be_bytes(),
            &secret_key.to_be_bytes(),
        )
        .is_ok();
        matches.then(|| (entry.upstream.clone(), Arc::clone(&entry.interrupt)))
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_secret_and_ends_with_the_registration() {
        let registry = Arc::new(Registry::default());
        let key = UpstreamKey {
            target: "app".into(),
            process_id: 42,
            secret_key: 7,
        };
        let (reg, secret) = registry.register(key);
        let pid = reg.process_id();
        assert!(pid > 0);
        assert_eq!(registry.lookup(pid, secret).unwrap().process_id, 42);
        assert!(registry.lookup(pid, secret.wrapping_add(1)).is_none());
        assert!(registry.lookup(pid.wrapping_add(1), secret).is_none());
        drop(reg);
        assert!(registry.lookup(pid, secret).is_none());
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_cancel_ends_a_held_statement_instead_of_going_upstream() {
        let registry = Arc::new(Registry::default());
        let key = UpstreamKey {
            target: "app".into(),
            process_id: 42,
            secret_key: 7,
        };
        let (reg, secret) = registry.register(key);
        let pid = reg.process_id();
        let interrupt = reg.interrupt();
        assert!(
            registry.cancel(pid, secret).is_some(),
            "nothing held: upstream"
        );
        let (holding, cancelled) = interrupt.hold();
        tokio::pin!(cancelled);
        let wait = |ms| std::time::Duration::from_millis(ms);
        assert!(registry.cancel(pid, secret.wrapping_add(1)).is_none());
        assert!(
            tokio::time::timeout(wait(20), &mut cancelled)
                .await
                .is_err(),
            "a wrong secret cancels nothing"
        );
        assert!(registry.cancel(pid, secret).is_none(), "held: ended here");
        tokio::time::timeout(wait(1000), &mut cancelled)
            .await
            .expect("the held statement hears it");
        drop(holding);
        assert!(
            registry.cancel(pid, secret).is_some(),
            "released: upstream again"
        );
    }
}
