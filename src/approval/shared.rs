//! Pending approvals in the shared PostgreSQL store, so that any instance's API can decide a
//! statement another instance holds, and the holding instance is woken by LISTEN/NOTIFY.
//!
//! The database work runs on a thread of its own (its runtime owns the pool and the listener);
//! callers talk to it through a channel. A decision is one conditional UPDATE (`state =
//! 'pending'`), so two approvers racing on two instances cannot both decide. A slow resync
//! (every 5 s, and after every reconnect) catches a notification lost while reconnecting.

use std::sync::Weak;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::{ApprovalId, Approvals, DecideError, Decision, Outcome, Request};
use crate::auth::Identity;

const CHANNEL: &str = "tollgate_approvals";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS approval_requests (
        id TEXT PRIMARY KEY,
        instance TEXT NOT NULL,
        request TEXT NOT NULL,
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        approver_group TEXT NOT NULL,
        target TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        decided_by TEXT,
        decided_issuer TEXT,
        reason TEXT,
        window_s BIGINT,
        decided_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS approval_requests_pending ON approval_requests (state, expires_at)",
    "CREATE TABLE IF NOT EXISTS approval_windows (
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        target TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        until_at BIGINT NOT NULL,
        approval TEXT NOT NULL,
        approver TEXT NOT NULL)",
];

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

enum Cmd {
    Insert(Box<Request>, oneshot::Sender<Result<(), String>>),
    List(oneshot::Sender<Result<Vec<Request>, String>>),
    Decide {
        id: String,
        approver: Box<Identity>,
        decision: Decision,
        reply: oneshot::Sender<Result<Request, DecideError>>,
    },
    Window {
        subject: String,
        issuer: String,
        target: String,
        fingerprint: String,
        reply: oneshot::Sender<Option<(ApprovalId, String)>>,
    },
    /// The holder ended a request (timeout, cancellation).
    Close {
        id: String,
        state: &'static str,
    },
}

/// The handle the [`Approvals`] of one instance uses.
pub struct Shared {
    tx: mpsc::Sender<Cmd>,
}

impl Shared {
    /// Connects, creates the tables, and starts the worker thread with its listener.
    pub fn start(
        url: String,
        instance: String,
        approvals: Weak<Approvals>,
    ) -> Result<Shared, String> {
        let (tx, rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tollgate-approvals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match setup(&url).await {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::spawn(listen(pool.clone(), approvals.clone()));
                    serve(pool, instance, rx).await;
                });
            })
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the approvals worker stopped".to_owned())??;
        Ok(Shared { tx })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    pub async fn insert(&self, r: &Request) -> Result<(), String> {
        self.ask(|reply| Cmd::Insert(Box::new(r.clone()), reply))
            .await
            .unwrap_or_else(|| Err("the approvals worker stopped".into()))
    }

    pub async fn list(&self) -> Result<Vec<Request>, String> {
        self.ask(Cmd::List)
            .await
            .unwrap_or_else(|| Err("the approvals worker stopped".into()))
    }

    pub async fn decide(
        &self,
        id: &str,
        approver: &Identity,
        decision: Decision,
    ) -> Result<Request, DecideError> {
        self.ask(|reply| Cmd::Decide {
            id: id.to_owned(),
            approver: Box::new(approver.clone()),
            decision,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(DecideError::NotFound(id.to_owned())))
    }

    pub async fn window(
        &self,
        identity: &Identity,
        target: &str,
        fingerprint: &str,
    ) -> Option<(ApprovalId, String)> {
        self.ask(|reply| Cmd::Window {
            subject: identity.subject.clone(),
            issuer: identity.issuer.clone(),
            target: target.to_owned(),
            fingerprint: fingerprint.to_owned(),
            reply,
        })
        .await
        .flatten()
    }

    pub fn close(&self, id: &ApprovalId, state: &'static str) {
        let _ = self.tx.try_send(Cmd::Close {
            id: id.0.clone(),
            state,
        });
    }
}

async fn setup(url: &str) -> Result<PgPool, String> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .map_err(|e| format!("approvals store: {e}"))?;
    // Session-level lock: taken and released on one connection (a pooled query may run on
    // another connection and leave the lock held, blocking every other instance's start).
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    sqlx::query("SELECT pg_advisory_lock(7207745542)")
        .execute(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut result = Ok(());
    for s in SCHEMA {
        if let Err(e) = sqlx::query(*s).execute(&mut *conn).await {
            result = Err(e.to_string());
            break;
        }
    }
    let _ = sqlx::query("SELECT pg_advisory_unlock(7207745542)")
        .execute(&mut *conn)
        .await;
    drop(conn);
    result?;
    Ok(pool)
}

async fn serve(pool: PgPool, instance: String, mut rx: mpsc::Receiver<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Insert(r, reply) => {
                let _ = reply.send(
                    insert(&pool, &instance, &r)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
            Cmd::List(reply) => {
                let _ = reply.send(list(&pool).await.map_err(|e| e.to_string()));
            }
            Cmd::Decide {
                id,
                approver,
                decision,
                reply,
            } => {
                let _ = reply.send(decide(&pool, &id, &approver, decision).await);
            }
            Cmd::Window {
                subject,
                issuer,
                target,
                fingerprint,
                reply,
            } => {
                let found = sqlx::query(
                    "SELECT approval, approver FROM approval_windows WHERE subject = $1 AND issuer = $2 AND target = $3 AND fingerprint = $4 AND until_at > $5 LIMIT 1",
                )
                .bind(&subject)
                .bind(&issuer)
                .bind(&target)
                .bind(&fingerprint)
                .bind(unix(SystemTime::now()))
                .fetch_optional(&pool)
                .await;
                let _ = reply.send(match found {
                    Ok(Some(row)) => Some((
                        ApprovalId(row.get::<String, _>("approval")),
                        row.get::<String, _>("approver"),
                    )),
                    Ok(None) => None,
                    Err(e) => {
                        warn!(error = %e, "approval windows unavailable");
                        None
                    }
                });
            }
            Cmd::Close { id, state } => {
                let r = sqlx::query(
                    "UPDATE approval_requests SET state = $2, decided_at = $3 WHERE id = $1 AND state = 'pending'",
                )
                .bind(&id)
                .bind(state)
                .bind(unix(SystemTime::now()))
                .execute(&pool)
                .await;
                if let Err(e) = r {
                    warn!(error = %e, approval = id, "approval state not stored");
                }
            }
        }
    }
}

async fn insert(pool: &PgPool, instance: &str, r: &Request) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO approval_requests (id, instance, request, subject, issuer, approver_group, target, fingerprint, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
    )
    .bind(&r.id.0)
    .bind(instance)
    .bind(serde_json::to_string(r).unwrap_or_default())
    .bind(&r.subject)
    .bind(&r.issuer)
    .bind(&r.approver_group)
    .bind(&r.target)
    .bind(&r.fingerprint)
    .bind(unix(r.created_at))
    .bind(unix(r.expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

fn request_of(row: &sqlx::postgres::PgRow) -> Option<Request> {
    let mut r: Request = serde_json::from_str(&row.get::<String, _>("request")).ok()?;
    r.fingerprint = row.get("fingerprint");
    r.expires_at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(row.get::<i64, _>("expires_at") as u64);
    r.created_at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(row.get::<i64, _>("created_at") as u64);
    Some(r)
}

async fn list(pool: &PgPool) -> Result<Vec<Request>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT request, fingerprint, created_at, expires_at FROM approval_requests WHERE state = 'pending' AND expires_at > $1 ORDER BY created_at, id",
    )
    .bind(unix(SystemTime::now()))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().filter_map(request_of).collect())
}

async fn decide(
    pool: &PgPool,
    id: &str,
    approver: &Identity,
    decision: Decision,
) -> Result<Request, DecideError> {
    let not_found = || DecideError::NotFound(id.to_owned());
    let row = sqlx::query(
        "SELECT request, fingerprint, created_at, expires_at FROM approval_requests WHERE id = $1 AND state = 'pending' AND expires_at > $2",
    )
    .bind(id)
    .bind(unix(SystemTime::now()))
    .fetch_optional(pool)
    .await
    .map_err(|_| not_found())?
    .ok_or_else(not_found)?;
    let request = request_of(&row).ok_or_else(not_found)?;
    if approver.subject == request.subject && approver.issuer == request.issuer {
        return Err(DecideError::OwnRequest);
    }
    if !approver.in_group(&request.approver_group) {
        return Err(DecideError::NotInGroup(request.approver_group.clone()));
    }
    let (state, reason, window) = match &decision {
        Decision::Approve { window } => ("approved", None, *window),
        Decision::Deny { reason } => ("denied", Some(reason.clone()), None),
    };
    let mut tx = pool.begin().await.map_err(|_| not_found())?;
    let updated = sqlx::query(
        "UPDATE approval_requests SET state = $2, decided_by = $3, decided_issuer = $4, reason = $5, window_s = $6, decided_at = $7 WHERE id = $1 AND state = 'pending' AND expires_at > $7",
    )
    .bind(id)
    .bind(state)
    .bind(&approver.subject)
    .bind(&approver.issuer)
    .bind(reason)
    .bind(window.map(|w| w.as_secs() as i64))
    .bind(unix(SystemTime::now()))
    .execute(&mut *tx)
    .await
    .map_err(|_| not_found())?;
    if updated.rows_affected() != 1 {
        return Err(not_found());
    }
    if let Some(w) = window {
        sqlx::query(
            "INSERT INTO approval_windows (subject, issuer, target, fingerprint, until_at, approval, approver) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&request.subject)
        .bind(&request.issuer)
        .bind(&request.target)
        .bind(&request.fingerprint)
        .bind(unix(SystemTime::now() + w))
        .bind(id)
        .bind(&approver.subject)
        .execute(&mut *tx)
        .await
        .map_err(|_| not_found())?;
    }
    // Delivered at commit: the holder never wakes before the decision is stored.
    sqlx::query(AssertSqlSafe(format!(
        "NOTIFY {CHANNEL}, '{}'",
        id.replace('\'', "")
    )))
    .execute(&mut *tx)
    .await
    .map_err(|_| not_found())?;
    tx.commit().await.map_err(|_| not_found())?;
    Ok(request)
}

/// Wakes this instance's waiting statements when any instance decides.
async fn listen(pool: PgPool, approvals: Weak<Approvals>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "approvals listener: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            error!(error = %e, "approvals listener: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        // Every 5 s (and at once after each LISTEN) the requests held here are checked, so a
        // notification missed while reconnecting is caught even under steady traffic.
        let mut resync = tokio::time::interval(Duration::from_secs(5));
        loop {
            let Some(a) = approvals.upgrade() else { return };
            let ids: Vec<String> = tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => vec![n.payload().to_owned()],
                    Err(e) => {
                        warn!(error = %e, "approvals listener interrupted; reconnecting");
                        break;
                    }
                },
                _ = resync.tick() => a.local_ids(),
            };
            for id in ids {
                if !a.is_local(&id) {
                    continue;
                }
                let row = sqlx::query(
                    "SELECT state, decided_by, decided_issuer, reason, window_s FROM approval_requests WHERE id = $1",
                )
                .bind(&id)
                .fetch_optional(&pool)
                .await;
                let Ok(Some(row)) = row else { continue };
                let by: Option<String> = row.get("decided_by");
                let issuer: Option<String> = row.get("decided_issuer");
                let outcome = match row.get::<String, _>("state").as_str() {
                    "approved" => Outcome::Approved {
                        by: by.clone().unwrap_or_default(),
                        window: row
                            .get::<Option<i64>, _>("window_s")
                            .map(|s| Duration::from_secs(s as u64)),
                    },
                    "denied" => Outcome::Denied {
                        by: by.clone().unwrap_or_default(),
                        reason: row.get::<Option<String>, _>("reason").unwrap_or_default(),
                    },
                    _ => continue,
                };
                let approver = Identity {
                    subject: by.unwrap_or_default(),
                    groups: Vec::new(),
                    client_id: None,
                    issuer: issuer.unwrap_or_default(),
                    expires_at: None,
                    actor: None,
                };
                a.decided_elsewhere(&ApprovalId(id), outcome, &approver);
            }
        }
    }
}
