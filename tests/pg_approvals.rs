//! Just-in-time approval through tollgate to the machine's PostgreSQL: a held statement waits on
//! its live connection (transaction kept) while approvers decide through the admin API; approve,
//! deny, timeout, windows, self-approval and outsiders refused, disconnects, 50 at once; every
//! outcome in the audit trail.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::approvals::*;
use tokio_postgres::{AsyncMessage, NoTls};
use tollgate::approval::Approvals;
use tollgate::audit::record::Signer;
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Store, kind};

#[tokio::test]
async fn approve_deny_and_timeout_each_end_the_wait_and_are_recorded() {
    let s = setup("basic").await;
    let bob = s.token("bob", &["dba"]);
    let (agent, mut notices) = s.agent("agent-1", &["ai-agents"]).await;

    // Held: the client is told at once, with the id, the group and the page.
    let insert = format!("insert into {} values (1)", s.table);
    // (A simple Query: it counts as running from the moment it arrives, hold included.)
    let held = tokio::spawn({
        let agent_sql = insert.clone();
        let a = agent;
        async move {
            let r = a.simple_query(agent_sql.as_str()).await.map(|m| {
                m.iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or(0)
            });
            (a, r)
        }
    });
    let list = s.wait_pending(&bob, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["subject"], "agent-1");
    assert_eq!(list[0]["approver_group"], "dba");
    assert_eq!(list[0]["rule"], "writes");
    assert!(list[0]["sql"].as_str().unwrap().contains("insert into"));
    match tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap()
    {
        AsyncMessage::Notice(n) => {
            assert!(n.message().contains(&id), "{}", n.message());
            assert!(n.message().contains("dba") && n.message().contains("/approvals/ui"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.count().await, 0, "not run while held");
    // Held longer than upstream_timeout: the server is silent because nothing was sent to
    // it, which is no stall (issue #21).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = s.decide(&bob, &id, "approve", serde_json::json!({})).await;
    assert_eq!(r.status(), 200);
    let (agent, result) = held.await.unwrap();
    assert_eq!(result.unwrap(), 1, "the statement's real result");
    assert_eq!(s.count().await, 1);

    // Denied with a reason: 42501 naming the approval and the reason.
    let held = tokio::spawn({
        let sql = format!("insert into {} values (2)", s.table);
        async move {
            let r = agent.execute(sql.as_str(), &[]).await;
            (agent, r)
        }
    });
    let list = s.wait_pending(&bob, 1).await;
    let id2 = list[0]["id"].as_str().unwrap().to_owned();
    let r = s
        .decide(
            &bob,
            &id2,
            "deny",
            serde_json::json!({"reason": "not on a Friday"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (agent, result) = held.await.unwrap();
    let e = result.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(
        message(&e).contains(&id2) && message(&e).contains("not on a Friday"),
        "{}",
        message(&e)
    );
    // The connection goes on.
    agent.simple_query("select 1").await.unwrap();

    // Nobody decides: after the rule's timeout, denied.
    let e = agent
        .execute(format!("insert into {} values (3)", s.quick).as_str(), &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(message(&e).contains("timed out"), "{}", message(&e));
    assert_eq!(s.count().await, 1);

    // The trail: held, approved (by bob), held, denied (reason), held, timed out.
    let records = s.approval_records().await;
    let decisions: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["outcome"].as_str().unwrap(),
                r["detail"]["decision"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            "held:-",
            "success:approved",
            "held:-",
            "refused:denied",
            "held:-",
            "refused:timed_out"
        ]
    );
    assert_eq!(records[1]["detail"]["approver"], "bob");
    assert_eq!(records[1]["detail"]["approval"], id.as_str());
    assert_eq!(records[1]["subject"], "agent-1", "the requester's identity");
    assert_eq!(records[3]["detail"]["reason"], "not on a Friday");
    assert!(
        records[0]["detail"]["created"].is_string() && records[0]["detail"]["expires"].is_string()
    );
}

#[tokio::test]
async fn only_approvers_outside_the_request_decide_and_windows_skip_the_wait() {
    let s = setup("who").await;
    // The agent is a DBA too, but cannot approve its own request.
    let (agent, _n) = s.agent("agent-2", &["ai-agents", "dba"]).await;
    let own = s.token("agent-2", &["dba"]);
    let carol = s.token("carol", &["developers"]);
    let bob = s.token("bob", &["dba"]);
    let agent = Arc::new(agent);
    let held = tokio::spawn({
        let a = Arc::clone(&agent);
        let sql = format!("insert into {} values (10)", s.table);
        async move { a.execute(sql.as_str(), &[]).await }
    });
    let list = s.wait_pending(&bob, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(s.pending(&carol).await.is_empty(), "not carol's group");
    let r = s.decide(&own, &id, "approve", serde_json::json!({})).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("own request"));
    let r = s
        .decide(&carol, &id, "approve", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 403);
    let r = s
        .decide("not-a-token", &id, "approve", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 401);
    // Bob approves for a window: the same statement runs again without asking.
    let r = s
        .decide(&bob, &id, "approve", serde_json::json!({"window": "10m"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(held.await.unwrap().unwrap(), 1);
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        agent.execute(format!("insert into {} values (10)", s.table).as_str(), &[]),
    )
    .await
    .expect("not held again within the window")
    .unwrap();
    assert_eq!(n, 1);
    // The window covers what Bob read, literals included (issue #15): other values wait again.
    let other_values = tokio::spawn({
        let a = Arc::clone(&agent);
        let sql = format!("insert into {} values (11)", s.table);
        async move { a.execute(sql.as_str(), &[]).await }
    });
    let list = s.wait_pending(&bob, 1).await;
    let r = s
        .decide(
            &bob,
            list[0]["id"].as_str().unwrap(),
            "approve",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(other_values.await.unwrap().unwrap(), 1);
    // A different statement is still held.
    let other = tokio::spawn({
        let a = Arc::clone(&agent);
        let sql = format!("update {} set v = 12 where v = 11", s.table);
        async move { a.execute(sql.as_str(), &[]).await }
    });
    let list = s.wait_pending(&bob, 1).await;
    let r = s
        .decide(
            &bob,
            list[0]["id"].as_str().unwrap(),
            "deny",
            serde_json::json!({"reason": "no"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(other.await.unwrap().is_err());
    let records = s.approval_records().await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["detail"]["decision"] == "refused_decision")
        .collect();
    assert_eq!(refused.len(), 2, "the refused decisions are recorded");
}

#[tokio::test]
async fn a_held_statement_keeps_its_transaction_and_a_disconnect_cancels() {
    let s = setup("tx").await;
    let bob = s.token("bob", &["dba"]);
    let (agent, _n) = s.agent("agent-3", &["ai-agents"]).await;
    let agent = Arc::new(agent);
    agent.batch_execute("begin").await.unwrap();
    let held = tokio::spawn({
        let a = Arc::clone(&agent);
        let sql = format!("insert into {} values (20)", s.table);
        async move { a.execute(sql.as_str(), &[]).await }
    });
    let list = s.wait_pending(&bob, 1).await;
    s.decide(
        &bob,
        list[0]["id"].as_str().unwrap(),
        "approve",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(held.await.unwrap().unwrap(), 1);
    assert_eq!(s.count().await, 0, "not visible before COMMIT");
    agent.batch_execute("commit").await.unwrap();
    assert_eq!(s.count().await, 1);

    // The client goes away while held: the request is cancelled and recorded so.
    let url = format!(
        "host=127.0.0.1 port={} user=agent-4 password={} dbname=test sslmode=disable",
        s.proxy.addr.port(),
        s.token("agent-4", &["ai-agents"])
    );
    let (gone, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let socket = tokio::spawn(connection);
    let task = tokio::spawn({
        let sql = format!("insert into {} values (21)", s.table);
        async move { gone.execute(sql.as_str(), &[]).await }
    });
    s.wait_pending(&bob, 1).await;
    // The socket closes: the client process is gone.
    socket.abort();
    task.abort();
    let _ = task.await;
    let mut cancelled = false;
    for _ in 0..100 {
        if s.pending(&bob).await.is_empty() {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cancelled, "the request went away with its client");
    let records = s.approval_records().await;
    assert!(
        records
            .iter()
            .any(|r| r["detail"]["decision"] == "cancelled")
    );
    assert_eq!(s.count().await, 1);
}

/// Issue #19, item 3: the client's CancelRequest while its statement is held. Before, nothing
/// happened for as long as the hold lasted and the request stayed pending, so a later approval
/// would have run a write the agent had cancelled. Now the statement ends at once with 57014,
/// the request is withdrawn (approving it finds nothing; the row is never inserted) and
/// recorded as cancelled, and the same connection runs its next query. With tokio-postgres's
/// cancel, then psql's Ctrl-C (SIGINT).
#[tokio::test]
async fn a_cancel_request_withdraws_the_held_statement() {
    let s = setup("cancel").await;
    let bob = s.token("bob", &["dba"]);
    let (agent, _n) = s.agent("agent-9", &["ai-agents"]).await;
    let agent = Arc::new(agent);
    let held = tokio::spawn({
        let a = Arc::clone(&agent);
        let sql = format!("insert into {} values (30)", s.table);
        async move { a.execute(sql.as_str(), &[]).await }
    });
    let list = s.wait_pending(&bob, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    agent.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held statement ends at once")
        .unwrap()
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code(&err), "57014", "{err:?}");
    assert!(message(&err).starts_with("canceling statement due to user request"));
    assert!(message(&err).contains(&id));
    assert!(s.pending(&bob).await.is_empty(), "withdrawn");
    let late = s.decide(&bob, &id, "approve", serde_json::json!({})).await;
    assert_eq!(late.status(), 404, "nothing left to approve");
    assert_eq!(s.count().await, 0, "the cancelled insert never ran");
    let n: i64 = agent
        .query_one(&format!("select count(*) from {}", s.table), &[])
        .await
        .expect("the connection carries on")
        .get(0);
    assert_eq!(n, 0);

    // psql: Ctrl-C while its INSERT is held.
    let psql = tokio::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=agent-10 dbname=test sslmode=disable",
            s.proxy.addr.port()
        ))
        .args(["-X", "-v", "VERBOSITY=verbose", "-c"])
        .arg(format!("insert into {} values (31)", s.table))
        .env("PGPASSWORD", s.token("agent-10", &["ai-agents"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let list = s.wait_pending(&bob, 1).await;
    let psql_id = list[0]["id"].as_str().unwrap().to_owned();
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &psql.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = tokio::time::timeout(Duration::from_secs(5), psql.wait_with_output())
        .await
        .expect("psql's statement ends at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("57014: canceling statement due to user request")
            && stderr.contains(&psql_id),
        "{stderr}"
    );
    assert!(s.pending(&bob).await.is_empty());
    let late = s
        .decide(&bob, &psql_id, "approve", serde_json::json!({}))
        .await;
    assert_eq!(late.status(), 404);
    assert_eq!(s.count().await, 0);

    let records = s.approval_records().await;
    for id in [&id, &psql_id] {
        let ends: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["detail"]["approval"] == **id && r["detail"]["decision"].is_string())
            .collect();
        assert_eq!(ends.len(), 1, "{id}: {records:?}");
        assert_eq!(ends[0]["detail"]["decision"], "cancelled");
        assert_eq!(
            ends[0]["detail"]["why"],
            "the client cancelled the statement (CancelRequest)"
        );
    }
}

#[tokio::test]
async fn fifty_held_at_once_approved_in_another_order() {
    let s = setup("fifty").await;
    let bob = s.token("bob", &["dba"]);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (agent, _n) = s.agent(&format!("agent-{i}"), &["ai-agents"]).await;
        let sql = format!("insert into {} values ({i})", s.table);
        tasks.push(tokio::spawn(async move {
            let _keep = _n;
            agent.execute(sql.as_str(), &[]).await
        }));
    }
    let mut list = s.wait_pending(&bob, 50).await;
    assert_eq!(list.len(), 50);
    list.reverse();
    for r in &list {
        let resp = s
            .decide(
                &bob,
                r["id"].as_str().unwrap(),
                "approve",
                serde_json::json!({}),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    assert_eq!(s.count().await, 50);
}

/// The webhook: a failing attempt is retried, the delivered body carries a Slack-style text
/// naming the request, and the outcome is recorded.
#[tokio::test]
async fn webhook_notifications_are_retried_and_recorded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (bodies_tx, mut bodies) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        for attempt in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            // Read until the whole body (Content-Length) is in.
            loop {
                let m = s.read(&mut buf[n..]).await.unwrap_or(0);
                n += m;
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if n >= end + 4 + len || m == 0 {
                        let _ = bodies_tx.send(text[end + 4..].to_owned());
                        break;
                    }
                }
                if m == 0 {
                    break;
                }
            }
            let status = if attempt == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let recorder = Recorder::start(
        Settings {
            location: Location::Sqlite(db.clone()),
            chain: "hook".into(),
            checkpoint_interval: Duration::from_secs(1),
            batch_size: 64,
            queue_size: 1024,
            queue_bytes: 4 << 20,
            queue_wait: Duration::from_secs(2),
            retention_days: 0,
            linger: Duration::from_millis(1),
        },
        Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let approvals = Approvals::new(
        tollgate::approval::Settings {
            page_url: Some("https://tollgate.example/approvals/ui".into()),
            webhook: Some(
                tollgate::approval::webhook::Webhook::new(url, Duration::from_secs(2), 2).unwrap(),
            ),
            max_pending: 10,
            max_pending_per_identity: 50,
        },
        Some(recorder.clone()),
    );
    let identity = tollgate::auth::Identity::static_login("agent-9", &["ai-agents".into()]);
    let ticket = approvals
        .submit(
            &identity,
            Arc::new(tollgate::audit::Who::default()),
            "payments",
            "payments",
            "update accounts set limit = 1 where id = 7".into(),
            "shape".into(),
            Some("writes".into()),
            "approved by a DBA".into(),
            "dba".into(),
            Duration::from_secs(60),
            tollgate::approval::Details {
                agent_reason: Some("INC-1234 raise the limit".into()),
                actor: Some("alice@example.com".into()),
                preview: Some(tollgate::approval::preview::Preview {
                    rows: Some(1),
                    tables: vec!["public.accounts".into()],
                    unavailable: None,
                }),
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, second, "the same notification, retried");
    let body: serde_json::Value = serde_json::from_str(&second).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("agent-9") && text.contains("update accounts") && text.contains("dba"),
        "{text}"
    );
    assert!(
        text.contains("https://tollgate.example/approvals/ui"),
        "{text}"
    );
    assert_eq!(body["approval"]["id"], ticket.request.id.0.as_str());
    // What the requester added: its reason, the person it acts for, the impact preview.
    assert!(
        text.contains("stated reason: INC-1234 raise the limit")
            && text.contains("acting for alice@example.com")
            && text.contains("impact: about 1 row (estimated); tables public.accounts"),
        "{text}"
    );
    assert_eq!(body["approval"]["agent_reason"], "INC-1234 raise the limit");
    assert_eq!(body["approval"]["actor"], "alice@example.com");
    assert_eq!(body["approval"]["preview"]["rows"], 1);
    // The delivery is recorded (after the retry succeeded).
    let mut delivered = false;
    for _ in 0..50 {
        recorder.flush().await.unwrap();
        let mut store = Store::open(&Location::Sqlite(db.clone()), false)
            .await
            .unwrap();
        let records = store.of_types(&[kind::APPROVAL], "", "9999").await.unwrap();
        store.close().await;
        if records.iter().any(|r| {
            r.body.contains("\"notification\":\"delivered\"") && r.body.contains("\"status\":200")
        }) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered, "the delivery is in the audit trail");
    drop(ticket);
}

/// One identity cannot fill the queue for everyone.
#[tokio::test]
async fn one_identity_cannot_crowd_out_the_others() {
    let approvals = Approvals::new(
        tollgate::approval::Settings {
            page_url: None,
            webhook: None,
            max_pending: 10,
            max_pending_per_identity: 1,
        },
        None,
    );
    let submit = |who: &str| {
        let approvals = Arc::clone(&approvals);
        let identity = tollgate::auth::Identity::static_login(who, &["ai-agents".into()]);
        async move {
            approvals
                .submit(
                    &identity,
                    Arc::new(tollgate::audit::Who::default()),
                    "t",
                    "t",
                    "delete from x where id = 1".into(),
                    "shape".into(),
                    None,
                    "r".into(),
                    "dba".into(),
                    Duration::from_secs(60),
                    Default::default(),
                )
                .await
        }
    };
    let first = submit("greedy").await.unwrap();
    assert_eq!(
        submit("greedy").await.err(),
        Some(tollgate::approval::SubmitError::TooManyOwn)
    );
    let other = submit("polite").await.unwrap();
    drop((first, other));
}
