//! Just-in-time approval: one statement held on a live connection until a human decides.
//!
//! The relay asks [`Approvals::submit`] for a [`Ticket`] and waits on it while the connection
//! and its transaction stay open; approvers decide through the admin API
//! ([`Approvals::decide`]), never on their own request and only in the rule's approver group.
//! An approval may cover a window: the same identity running a statement with the same
//! fingerprint on the same target within N minutes goes through without asking again.
//! Every step (held, notified, approved, denied, timed out, cancelled) is recorded.

pub mod preview;
pub mod shared;
pub mod webhook;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::audit::{self, Event, Outcome as AuditOutcome, Recorder, Who};
use crate::auth::Identity;

/// An approval request's id (`ap_` and 12 letters: 60 random bits, no digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApprovalId(pub String);

impl ApprovalId {
    fn random() -> ApprovalId {
        ApprovalId(format!("ap_{}", audit::random_letters(12)))
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// What an approver reviews.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: ApprovalId,
    /// The requester's subject and issuer (nobody approves their own request).
    pub subject: String,
    pub issuer: String,
    pub groups: Vec<String>,
    pub session: Option<String>,
    pub client_addr: Option<String>,
    pub target: String,
    pub database: String,
    /// The statement, masked.
    pub sql: String,
    #[serde(skip)]
    pub fingerprint: String,
    pub rule: Option<String>,
    pub reason: String,
    /// The group whose members may decide.
    pub approver_group: String,
    pub created: String,
    pub expires: String,
    #[serde(skip, default = "epoch")]
    pub expires_at: SystemTime,
    #[serde(skip, default = "epoch")]
    pub created_at: SystemTime,
    #[serde(skip)]
    pub who: Arc<Who>,
    /// What the requester adds: its stated reason, the person it acts for, the preview.
    #[serde(flatten)]
    pub details: Details,
}

/// What an approver sees besides the statement and the rule, each masked, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// The reason the agent stated (`/* reason: … */` or its session's `tollgate.reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
    /// The person the agent acts for (the token's actor claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The server's estimate of what the statement would touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<preview::Preview>,
}

impl Details {
    /// The details as one line for people (the webhook's text, the CLI).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(actor) = &self.actor {
            parts.push(format!("acting for {actor}"));
        }
        if let Some(reason) = &self.agent_reason {
            parts.push(format!("stated reason: {reason}"));
        }
        if let Some(p) = &self.preview {
            parts.push(format!("impact: {}", p.summary()));
        }
        parts.join("; ")
    }
}

/// How a held statement ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved {
        by: String,
        /// Same identity, statement and target go through without asking for this long.
        window: Option<Duration>,
    },
    Denied {
        by: String,
        reason: String,
    },
    TimedOut,
    /// The client went away (or the daemon stopped) while waiting.
    Cancelled,
}

/// A decision an approver takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve { window: Option<Duration> },
    Deny { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no pending approval {0}")]
    NotFound(String),
    #[error("nobody approves their own request")]
    OwnRequest,
    #[error("deciding needs membership of group {0:?}")]
    NotInGroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("too many statements are waiting for approval")]
    TooMany,
    #[error("too many of this identity's statements are waiting for approval")]
    TooManyOwn,
    #[error("the shared approvals store failed ({0})")]
    Store(String),
    #[error("the request cannot be recorded ({0})")]
    NotRecorded(audit::Unavailable),
}

struct Pending {
    request: Arc<Request>,
    tx: oneshot::Sender<Outcome>,
}

struct Window {
    subject: String,
    issuer: String,
    target: String,
    fingerprint: String,
    until: SystemTime,
    approval: ApprovalId,
    by: String,
}

/// Settings from the `approvals` config section.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where approvers decide (named in the client's notice and the webhook).
    pub page_url: Option<String>,
    pub webhook: Option<webhook::Webhook>,
    /// Requests waiting at once, at most.
    pub max_pending: usize,
    /// Requests of one identity waiting at once, at most.
    pub max_pending_per_identity: usize,
}

/// The daemon's pending approvals.
pub struct Approvals {
    pending: Mutex<HashMap<ApprovalId, Pending>>,
    windows: Mutex<Vec<Window>>,
    recorder: Option<Recorder>,
    settings: Settings,
    /// Pending requests in the shared PostgreSQL store (several instances).
    shared: std::sync::OnceLock<shared::Shared>,
}

/// A submitted request, waited on by the connection holding its statement. Dropped before
/// an outcome (the client went away), it cancels the request.
pub struct Ticket {
    pub request: Arc<Request>,
    rx: Option<oneshot::Receiver<Outcome>>,
    approvals: Arc<Approvals>,
}

impl Ticket {
    /// Waits for the decision, or the request's expiry (a timeout denies).
    pub async fn outcome(&mut self) -> Outcome {
        let Some(rx) = self.rx.as_mut() else {
            return Outcome::Cancelled;
        };
        let wait = self
            .request
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let outcome = match tokio::time::timeout(wait, &mut *rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Cancelled,
            Err(_) => {
                if self
                    .approvals
                    .finish(&self.request.id, Outcome::TimedOut, None)
                {
                    Outcome::TimedOut
                } else {
                    // A decision got there first: it is on its way; take it, so the client
                    // and the trail agree.
                    rx.await.unwrap_or(Outcome::Cancelled)
                }
            }
        };
        self.rx = None;
        outcome
    }
}

impl Ticket {
    /// Withdraws the request because the client cancelled its statement (PostgreSQL's
    /// CancelRequest, MySQL's KILL): it can no longer be approved, and the trail records it as
    /// cancelled, `why`. False if a decision got there first (the statement still does not
    /// run: the client asked for it not to).
    pub fn withdraw(mut self, why: &str) -> bool {
        self.rx = None;
        self.approvals
            .finish_because(&self.request.id, Outcome::Cancelled, None, why)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.approvals
                .finish(&self.request.id, Outcome::Cancelled, None);
        }
    }
}

impl Approvals {
    pub fn new(settings: Settings, recorder: Option<Recorder>) -> Arc<Approvals> {
        Arc::new(Approvals {
            pending: Mutex::new(HashMap::new()),
            windows: Mutex::new(Vec::new()),
            recorder,
            settings,
            shared: std::sync::OnceLock::new(),
        })
    }

    /// Keeps pending requests in the shared PostgreSQL store at `url`, so any instance decides
    /// and the holding one is woken. `instance` names this one (its audit chain).
    pub fn share(self: &Arc<Self>, url: String, instance: String) -> Result<(), String> {
        let s = shared::Shared::start(url, instance, Arc::downgrade(self))?;
        let _ = self.shared.set(s);
        Ok(())
    }

    /// Ids of the requests this instance holds.
    fn local_ids(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|k| k.0.clone())
            .collect()
    }

    fn is_local(&self, id: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ApprovalId(id.to_owned()))
    }

    /// Another instance decided a request this one holds.
    fn decided_elsewhere(&self, id: &ApprovalId, outcome: Outcome, approver: &Identity) {
        self.finish(id, outcome, Some(approver));
    }

    pub fn page_url(&self) -> Option<&str> {
        self.settings.page_url.as_deref()
    }

    /// The approval whose window covers this statement, and who granted it.
    pub async fn window(
        &self,
        identity: &Identity,
        target: &str,
        fingerprint: &str,
    ) -> Option<(ApprovalId, String)> {
        let local = {
            let now = SystemTime::now();
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            windows.retain(|w| w.until > now);
            windows
                .iter()
                .find(|w| {
                    w.subject == identity.subject
                        && w.issuer == identity.issuer
                        && w.target == target
                        && w.fingerprint == fingerprint
                })
                .map(|w| (w.approval.clone(), w.by.clone()))
        };
        match (local, self.shared.get()) {
            (Some(found), _) => Some(found),
            (None, Some(s)) => s.window(identity, target, fingerprint).await,
            (None, None) => None,
        }
    }

    /// Holds a statement: records the request, notifies approvers, returns the ticket.
    #[allow(clippy::too_many_arguments)] // a request's fields, each from its own source
    pub async fn submit(
        self: &Arc<Self>,
        identity: &Identity,
        who: Arc<Who>,
        target: &str,
        database: &str,
        sql: String,
        fingerprint: String,
        rule: Option<String>,
        reason: String,
        approver_group: String,
        timeout: Duration,
        details: Details,
    ) -> Result<Ticket, SubmitError> {
        let now = SystemTime::now();
        let request = Arc::new(Request {
            id: ApprovalId::random(),
            subject: identity.subject.clone(),
            issuer: identity.issuer.clone(),
            groups: identity.groups.clone(),
            session: who.session.as_ref().map(|s| s.0.clone()),
            client_addr: who.client_addr.clone(),
            target: target.to_owned(),
            database: database.to_owned(),
            sql,
            fingerprint,
            rule,
            reason,
            approver_group,
            created: ts(now),
            expires: ts(now + timeout),
            expires_at: now + timeout,
            created_at: now,
            who,
            details,
        });
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= self.settings.max_pending.max(1) {
                return Err(SubmitError::TooMany);
            }
            // One identity cannot crowd out everyone else's requests.
            let own = pending
                .values()
                .filter(|p| {
                    p.request.subject == identity.subject && p.request.issuer == identity.issuer
                })
                .count();
            if own >= self.settings.max_pending_per_identity.max(1) {
                return Err(SubmitError::TooManyOwn);
            }
            // Recorded before anyone can see it (PCI DSS 10.7: nothing unrecorded).
            if let Some(r) = &self.recorder {
                r.record(self.event(&request, AuditOutcome::Held, serde_json::json!({})))
                    .map_err(SubmitError::NotRecorded)?;
            }
            pending.insert(
                request.id.clone(),
                Pending {
                    request: Arc::clone(&request),
                    tx,
                },
            );
            metrics::gauge!(crate::metrics::APPROVALS_PENDING).set(pending.len() as f64);
        }
        if let Some(s) = self.shared.get()
            && let Err(e) = s.insert(&request).await
        {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request.id);
            return Err(SubmitError::Store(e));
        }
        if let Some(hook) = self.settings.webhook.clone() {
            let approvals = Arc::clone(self);
            let request = Arc::clone(&request);
            tokio::spawn(async move {
                let result = hook.notify(&request, approvals.page_url()).await;
                approvals.record_notification(&request, result);
            });
        }
        Ok(Ticket {
            request,
            rx: Some(rx),
            approvals: Arc::clone(self),
        })
    }

    /// Requests waiting for a decision, oldest first (every instance's, with a shared store).
    pub async fn list(&self) -> Result<Vec<Request>, String> {
        if let Some(s) = self.shared.get() {
            return s.list().await;
        }
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Request> = pending.values().map(|p| (*p.request).clone()).collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.0.cmp(&b.id.0)));
        Ok(list)
    }

    /// An approver's decision. The approver must be in the request's group and not its
    /// requester.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Identity,
        decision: Decision,
    ) -> Result<Request, DecideError> {
        if let Some(s) = self.shared.get() {
            let result = s.decide(id, approver, decision.clone()).await;
            let local = self.is_local(id);
            match &result {
                Ok(_) if local => {
                    // Held here: wake it now rather than at the notification.
                    let outcome = match decision {
                        Decision::Approve { window } => Outcome::Approved {
                            by: approver.subject.clone(),
                            window,
                        },
                        Decision::Deny { reason } => Outcome::Denied {
                            by: approver.subject.clone(),
                            reason,
                        },
                    };
                    self.finish(&ApprovalId(id.to_owned()), outcome, Some(approver));
                }
                _ => self.record_remote_decision(id, approver, &decision, &result),
            }
            return result;
        }
        let request = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let p = pending
                .get(&ApprovalId(id.to_owned()))
                .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
            Arc::clone(&p.request)
        };
        if approver.subject == request.subject && approver.issuer == request.issuer {
            self.record_refused_decision(&request, approver, "own request");
            return Err(DecideError::OwnRequest);
        }
        if !approver.in_group(&request.approver_group) {
            self.record_refused_decision(&request, approver, "not in the approver group");
            return Err(DecideError::NotInGroup(request.approver_group.clone()));
        }
        let outcome = match decision {
            Decision::Approve { window } => Outcome::Approved {
                by: approver.subject.clone(),
                window,
            },
            Decision::Deny { reason } => Outcome::Denied {
                by: approver.subject.clone(),
                reason,
            },
        };
        if !self.finish(&request.id, outcome, Some(approver)) {
            return Err(DecideError::NotFound(id.to_owned()));
        }
        Ok((*request).clone())
    }

    /// A decision taken here on a request another instance holds (that one records the
    /// outcome with the session; this records the approver's action).
    fn record_remote_decision(
        &self,
        id: &str,
        approver: &Identity,
        decision: &Decision,
        result: &Result<Request, DecideError>,
    ) {
        let Some(r) = &self.recorder else { return };
        let (outcome, why) = match result {
            Ok(_) => (AuditOutcome::Success, None),
            Err(e) => (AuditOutcome::Failure, Some(e.to_string())),
        };
        let who = Arc::new(Who {
            subject: Some(crate::mask::for_log(&approver.subject)),
            groups: approver.groups.clone(),
            issuer: Some(approver.issuer.clone()),
            ..Who::default()
        });
        let _ = r.record(Event::new(
            audit::kind::ADMIN_ACTION,
            outcome,
            who,
            serde_json::json!({
                "action": "approval decision",
                "approval": id,
                "decision": match decision { Decision::Approve { .. } => "approve", Decision::Deny { .. } => "deny" },
                "refused": why,
            }),
        ));
    }

    /// Ends a request; false if it had already ended.
    fn finish(&self, id: &ApprovalId, outcome: Outcome, approver: Option<&Identity>) -> bool {
        self.finish_because(id, outcome, approver, "the client disconnected")
    }

    /// [`Approvals::finish`], with why a cancelled request was cancelled.
    fn finish_because(
        &self,
        id: &ApprovalId,
        outcome: Outcome,
        approver: Option<&Identity>,
        why: &str,
    ) -> bool {
        let p = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let p = pending.remove(id);
            metrics::gauge!(crate::metrics::APPROVALS_PENDING).set(pending.len() as f64);
            p
        };
        let Some(p) = p else {
            return false;
        };
        let label = match &outcome {
            Outcome::Approved { .. } => "approved",
            Outcome::Denied { .. } => "denied",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        };
        let waited = SystemTime::now()
            .duration_since(p.request.created_at)
            .unwrap_or_default();
        metrics::histogram!(crate::metrics::APPROVAL_WAIT, "outcome" => label)
            .record(waited.as_secs_f64());
        if let Outcome::Approved {
            by,
            window: Some(window),
        } = &outcome
        {
            self.windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Window {
                    subject: p.request.subject.clone(),
                    issuer: p.request.issuer.clone(),
                    target: p.request.target.clone(),
                    fingerprint: p.request.fingerprint.clone(),
                    until: SystemTime::now() + *window,
                    approval: id.clone(),
                    by: by.clone(),
                });
        }
        if let Some(r) = &self.recorder {
            let (result, detail) = match &outcome {
                Outcome::Approved { by, window } => (
                    AuditOutcome::Success,
                    serde_json::json!({"decision": "approved", "approver": by, "window_s": window.map(|w| w.as_secs())}),
                ),
                Outcome::Denied { by, reason } => (
                    AuditOutcome::Refused,
                    serde_json::json!({"decision": "denied", "approver": by, "reason": crate::mask::for_log(reason)}),
                ),
                Outcome::TimedOut => (
                    AuditOutcome::Refused,
                    serde_json::json!({"decision": "timed_out"}),
                ),
                Outcome::Cancelled => (
                    AuditOutcome::Failure,
                    serde_json::json!({"decision": "cancelled", "why": why}),
                ),
            };
            let mut detail = detail;
            if let Some(a) = approver {
                detail["approver_issuer"] = a.issuer.clone().into();
                detail["approver_groups"] = a.groups.clone().into();
            }
            // Decisions are recorded even when the queue is full: they wait for room.
            let event = self.event(&p.request, result, detail);
            let r = r.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = r.record_wait(event).await;
                    });
                }
                Err(_) => {
                    let _ = r.record(event);
                }
            }
        }
        if let Some(s) = self.shared.get() {
            match &outcome {
                Outcome::TimedOut => s.close(id, "timed_out"),
                Outcome::Cancelled => s.close(id, "cancelled"),
                _ => {}
            }
        }
        let _ = p.tx.send(outcome);
        true
    }

    fn event(&self, r: &Request, outcome: AuditOutcome, mut detail: serde_json::Value) -> Event {
        let fields = serde_json::json!({
            "approval": r.id.0,
            "sql": r.sql,
            "rule": r.rule,
            "reason": crate::mask::for_log(&r.reason),
            "approver_group": r.approver_group,
            "requester": crate::mask::for_log(&r.subject),
            "created": r.created,
            "expires": r.expires,
        });
        let mut fields = fields;
        if let Some(reason) = &r.details.agent_reason {
            fields["agent_reason"] = crate::mask::for_log(reason).into();
        }
        if let Some(actor) = &r.details.actor {
            fields["actor"] = crate::mask::for_log(actor).into();
        }
        if let Some(p) = &r.details.preview {
            fields["preview"] = serde_json::to_value(p).unwrap_or_default();
        }
        if let (Some(d), serde_json::Value::Object(f)) = (detail.as_object_mut(), fields) {
            for (k, v) in f {
                d.entry(k).or_insert(v);
            }
        }
        Event::new(audit::kind::APPROVAL, outcome, Arc::clone(&r.who), detail)
    }

    fn record_refused_decision(&self, r: &Request, approver: &Identity, why: &str) {
        if let Some(rec) = &self.recorder {
            let _ = rec.record(self.event(
                r,
                AuditOutcome::Failure,
                serde_json::json!({
                    "decision": "refused_decision",
                    "approver": crate::mask::for_log(&approver.subject),
                    "why": why,
                }),
            ));
        }
    }

    fn record_notification(&self, r: &Request, result: Result<u16, String>) {
        if let Some(rec) = &self.recorder {
            let (outcome, detail) = match result {
                Ok(status) => (
                    AuditOutcome::Success,
                    serde_json::json!({"notification": "delivered", "status": status}),
                ),
                Err(e) => (
                    AuditOutcome::Failure,
                    serde_json::json!({"notification": "failed", "error": crate::mask::for_log(&e)}),
                ),
            };
            let _ = rec.record(self.event(r, outcome, detail));
        }
    }

    /// The client's notice when a statement is held.
    pub fn notice(&self, r: &Request) -> String {
        let mut text = format!(
            "tollgate: statement held for approval {} by group {} ({}); it waits until {}",
            r.id, r.approver_group, r.reason, r.expires
        );
        if let Some(url) = self.page_url() {
            text.push_str(&format!("; approve at {url}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared store keeps a request as its JSON: the requester's details survive the trip,
    /// and a request stored before they existed still reads.
    #[test]
    fn a_request_and_its_details_round_trip_through_json() {
        let now = SystemTime::now();
        let request = Request {
            id: ApprovalId("ap_abcdefghijkl".into()),
            subject: "agent-1".into(),
            issuer: "https://idp.example".into(),
            groups: vec!["ai-agents".into()],
            session: None,
            client_addr: None,
            target: "t".into(),
            database: "d".into(),
            sql: "delete from t".into(),
            fingerprint: String::new(),
            rule: Some("writes".into()),
            reason: "approved by a DBA".into(),
            approver_group: "dba".into(),
            created: ts(now),
            expires: ts(now),
            expires_at: now,
            created_at: now,
            who: Arc::default(),
            details: Details {
                agent_reason: Some("INC-1".into()),
                actor: Some("alice".into()),
                preview: Some(preview::Preview::unavailable("preview timed out")),
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        let back: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(back.details, request.details);
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        for k in ["agent_reason", "actor", "preview"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let back: Request = serde_json::from_value(old).unwrap();
        assert_eq!(back.details, Details::default());
    }
}
