//! The daemon's phases and the line from the daemon to each live connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::pipeline::ConnId;

/// Connection ids, unique within this process and shared by every listener (MySQL clients see
/// them as their connection id).
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A new connection's id.
pub fn next_conn_id() -> ConnId {
    ConnId(NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed))
}

/// Where the daemon is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Running = 0,
    /// No new connections; each ends once idle.
    Draining = 1,
    /// Grace period over: every connection ends now.
    Closing = 2,
}

/// A message to one connection's writer.
pub enum Control {
    /// A FATAL error to send the client before closing (from the client-reading loop).
    Fatal(Vec<u8>),
    /// A message for the client (a NoticeResponse) from the client-reading loop.
    Notice(Vec<u8>),
    /// The daemon entered a new phase.
    Phase(Phase),
}

/// The daemon's phase and a line to every live connection, to wake it when the phase changes.
/// (A channel per connection rather than a shared watch: its receiver is polled on every read
/// and costs no lock.)
#[derive(Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    conns: Mutex<HashMap<ConnId, mpsc::Sender<Control>>>,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    pub(crate) fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for tx in conns.values() {
            // A full channel already holds a wake-up; the phase itself is read from the atomic.
            let _ = tx.try_send(Control::Phase(phase));
        }
    }

    pub(crate) fn register(&self, id: ConnId) -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(4);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx.clone());
        (tx, rx)
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}
