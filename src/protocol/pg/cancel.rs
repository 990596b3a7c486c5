//! Query cancellation across the proxy.
//!
//! Each client gets a BackendKeyData of tollgate's own (random process id and secret), never the
//! upstream one. A CancelRequest arrives on a new connection with those keys; the registry maps
//! them to the upstream server and its keys, and tollgate sends the cancel there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    entries: Mutex<HashMap<i32, (i32, UpstreamKey)>>,
}

/// Removes a connection's key when the connection ends.
pub struct Registration {
    registry: Arc<Registry>,
    process_id: i32,
}

impl Registration {
    pub fn process_id(&self) -> i32 {
        self.process_id
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
        entries.insert(process_id, (secret, upstream));
        (
            Registration {
                registry: Arc::clone(self),
                process_id,
            },
            secret,
        )
    }

    /// The upstream key for a cancel request, if both process id and secret match.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<UpstreamKey> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (secret, key) = entries.get(&process_id)?;
        let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
            &secret.to_be_bytes(),
            &secret_key.to_be_bytes(),
        )
        .is_ok();
        matches.then(|| key.clone())
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
}
