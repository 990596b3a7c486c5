//! Issue #20: what agents' owners ask for, through tollgate to the machine's PostgreSQL. A rule
//! requiring a reason refuses a statement stating none (the table unchanged) and holds one
//! that states it in a leading comment; the reason and the person the agent acts for (the
//! token's `act.sub`) are recorded with the session and the statement and shown to approvers
//! (`GET /approvals`, `tollgate approvals list`); a session's reason comes through libpq's
//! `options`; a held DELETE is shown with the planner's estimate, and still not run.

mod common;

use std::time::Duration;

use common::approvals::*;
use tollgate::audit::store::Location;
use tollgate::audit::{Store, kind};

const RULE: &str = "  - id: writes-need-a-reason
    match: { groups: [ai-agents], kinds: [write], tables: [{table}] }
    action: allow
    require_reason: true";

/// The trail's records of these kinds, oldest first.
async fn records(s: &Setup, kinds: &[&str]) -> Vec<serde_json::Value> {
    s.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(s.db.clone()), false)
        .await
        .unwrap();
    let list = store.of_types(kinds, "", "9999").await.unwrap();
    store.close().await;
    list.iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_required_reason_refuses_without_and_is_recorded_and_shown_with() {
    let s = setup_with("reason", RULE).await;
    let bob = s.token("bob", &["dba"]);
    let token = s
        .issuer
        .mint_for(
            "agent-r",
            &["ai-agents".to_owned()],
            Duration::from_secs(600),
            Some("alice@example.com"),
        )
        .unwrap();
    let url = format!(
        "host=127.0.0.1 port={} user=agent-r password={token} dbname=test sslmode=disable",
        s.proxy.addr.port()
    );
    let (agent, _notices) = s.connect(&url).await;

    // No reason: refused by the rule, nothing reaches the server, the connection goes on.
    let e = agent
        .simple_query(&format!("insert into {} values (1)", s.table))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(
        message(&e).contains("writes-need-a-reason") && message(&e).contains("reason is required"),
        "{}",
        message(&e)
    );
    // A reason anywhere but the leading comment is no reason.
    let e = agent
        .simple_query(&format!(
            "insert into {} values (1) /* reason: too late */",
            s.table
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    assert_eq!(s.count().await, 0, "the table is unchanged");
    agent.simple_query("select 1").await.unwrap();

    // With a reason (and a card number in it): held, the approvers see it, masked.
    let sql = format!(
        "/* reason: INC-1234 fix duplicate orders of card 4111111111111111 */ insert into {} values (1)",
        s.table
    );
    let held = tokio::spawn(async move {
        let r = agent.simple_query(&sql).await.map(|_| ());
        (agent, r)
    });
    let list = s.wait_pending(&bob, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let stated = list[0]["agent_reason"].as_str().unwrap();
    assert!(
        stated.starts_with("INC-1234 fix duplicate orders of card 411111"),
        "{stated}"
    );
    assert!(!stated.contains("4111111111111111"), "{stated}");
    assert_eq!(list[0]["actor"], "alice@example.com");
    assert_eq!(
        list[0]["preview"]["unavailable"],
        "no preview: only UPDATE, DELETE, INSERT … SELECT and MERGE are previewed"
    );

    // `tollgate approvals list` shows them too.
    let (admin, bob2) = (s.admin.clone(), bob.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["approvals", "list"])
            .env("TOLLGATE_TOKEN", bob2)
            .env("TOLLGATE_ADMIN_URL", admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains(&id)
            && listed.contains("reason: INC-1234 fix duplicate orders")
            && listed.contains("for alice@example.com"),
        "{listed}"
    );
    assert!(!listed.contains("4111111111111111"));

    let r = s.decide(&bob, &id, "approve", serde_json::json!({})).await;
    assert_eq!(r.status(), 200);
    let (_agent, result) = held.await.unwrap();
    result.unwrap();
    assert_eq!(s.count().await, 1, "run once approved");

    // The trail: the session names the actor, the statements their reason and actor.
    let starts = records(&s, &[kind::SESSION_START]).await;
    assert!(
        starts
            .iter()
            .any(|r| r["subject"] == "agent-r" && r["detail"]["actor"] == "alice@example.com"),
        "{starts:?}"
    );
    let statements = records(&s, &[kind::STATEMENT]).await;
    let ours: Vec<_> = statements
        .iter()
        .filter(|r| {
            r["subject"] == "agent-r"
                && r["detail"]["sql"]
                    .as_str()
                    .is_some_and(|q| q.contains("insert"))
        })
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(ours[0]["detail"]["reason"].is_null());
    assert_eq!(ours[0]["outcome"], "refused");
    let recorded = ours[2]["detail"]["reason"].as_str().unwrap();
    assert!(
        recorded.starts_with("INC-1234 fix duplicate orders"),
        "{recorded}"
    );
    assert_eq!(ours[2]["detail"]["actor"], "alice@example.com");
    let approvals = s.approval_records().await;
    assert!(
        approvals[0]["detail"]["agent_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("INC-1234"))
    );
    let everything = format!("{starts:?}{statements:?}{approvals:?}");
    assert!(
        !everything.contains("4111111111111111"),
        "a clear PAN in the trail"
    );
}

#[tokio::test]
async fn a_session_reason_from_options_and_a_preview_of_a_held_delete() {
    let s = setup_with("sreason", RULE).await;
    let bob = s.token("bob", &["dba"]);
    direct()
        .await
        .batch_execute(&format!(
            "insert into {t} select generate_series(1, 1000); analyze {t}",
            t = s.table
        ))
        .await
        .unwrap();
    // libpq's options (PGOPTIONS): the reason for every statement of the session; the
    // server never sees it.
    let url = format!(
        r"host=127.0.0.1 port={} user=agent-s password={} dbname=test sslmode=disable options='-c tollgate.reason=INC-77\\ nightly\\ cleanup'",
        s.proxy.addr.port(),
        s.token("agent-s", &["ai-agents"])
    );
    let (agent, _notices) = s.connect(&url).await;
    let shown = agent.simple_query("show tollgate.reason").await;
    assert!(shown.is_err(), "the server does not know the setting");
    let delete = format!("delete from {} where v <= 100", s.table);
    let held = tokio::spawn(async move {
        let r = agent.simple_query(&delete).await.map(|_| ());
        (agent, r)
    });
    let list = s.wait_pending(&bob, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["agent_reason"], "INC-77 nightly cleanup");
    assert!(list[0]["actor"].is_null());
    let preview = &list[0]["preview"];
    let rows = preview["rows"]
        .as_u64()
        .unwrap_or_else(|| panic!("{preview}"));
    assert!(
        (50..=200).contains(&rows),
        "the planner's estimate: {preview}"
    );
    assert_eq!(preview["tables"][0], format!("public.{}", s.table));
    let r = s
        .decide(
            &bob,
            &id,
            "deny",
            serde_json::json!({"reason": "not today"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_agent, result) = held.await.unwrap();
    assert!(result.is_err());
    assert_eq!(s.count().await, 1000, "planned, never run");

    let starts = records(&s, &[kind::SESSION_START]).await;
    assert!(
        starts
            .iter()
            .any(|r| r["subject"] == "agent-s" && r["detail"]["reason"] == "INC-77 nightly cleanup"),
        "{starts:?}"
    );
    assert!(starts.iter().all(|r| r["detail"]["actor"].is_null()));
}
