//! Issue #20 on MariaDB through tollgate: a rule requiring a reason refuses a statement stating
//! none (ERR 1227, the row still there); a `tollgate.reason` connection attribute (what
//! mysql_async, PyMySQL and mysql2 send as connection attributes) or a leading comment gives
//! one; the reason and the token's actor reach the trail and the approvers, with the
//! server's estimate for a held DELETE (which still does not run until approved).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::mysql::*;
use mysql_async::Conn;
use mysql_async::prelude::*;
use tollgate::audit::store::Location;
use tollgate::audit::{Store, kind};

#[tokio::test]
async fn a_required_reason_on_mariadb_from_an_attribute_or_a_comment() {
    let name = "mreason";
    let table = format!("my_{name}_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "default: deny
rules:
  - id: read
    match: {{ groups: [ai-agents], kinds: [read, session, transaction] }}
    action: allow
  - id: writes
    match: {{ groups: [ai-agents], kinds: [write], tables: [{table}] }}
    action: require_approval
    require_reason: true
    reason: data changes by agents are approved by a DBA
    approval: {{ group: dba, timeout: 60s }}
"
        ),
    )
    .unwrap();
    let s = setup_policy(name, "", Some(&policy), true).await;
    let bob = s.token("bob", &["dba"]);
    let count = || async {
        let mut d = direct().await;
        let n: Option<i64> = d
            .query_first(format!("select count(*) from {table}"))
            .await
            .unwrap();
        n.unwrap()
    };

    // No reason: ERR 1227 naming the rule; the row is still there; the connection goes on.
    let mut agent = s.agent("agent-m", &["ai-agents"]).await;
    let e = agent
        .query_drop(format!("delete from {table} where id = 2"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1227);
    assert!(
        message(&e).contains("writes") && message(&e).contains("reason is required"),
        "{}",
        message(&e)
    );
    assert_eq!(count().await, 2);
    agent.query_drop("select 1").await.unwrap();

    // A leading comment gives the reason: held, shown with it; denied, nothing changes.
    let held = tokio::spawn({
        let sql = format!("/* reason: INC-5 stale row */ delete from {table} where id = 2");
        async move {
            let r = agent.query_drop(sql).await;
            (agent, r)
        }
    });
    let id = s.first_pending(&bob).await;
    let list = s.pending(&bob).await;
    assert_eq!(list[0]["agent_reason"], "INC-5 stale row");
    assert!(list[0]["actor"].is_null());
    // The server's plan, asked on a side connection: one row by the primary key.
    let preview = &list[0]["preview"];
    assert_eq!(preview["rows"], 1, "{preview}");
    assert_eq!(preview["tables"][0], table.as_str(), "{preview}");
    let r = s
        .http
        .post(format!("{}/approvals/{id}/deny", s.admin))
        .bearer_auth(&bob)
        .json(&serde_json::json!({"reason": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_agent, result) = held.await.unwrap();
    assert_eq!(code(&result.unwrap_err()), 1227);
    assert_eq!(count().await, 2);

    // The session's reason as a connection attribute, and a token naming its actor.
    let token = s
        .issuer
        .mint_for(
            "agent-n",
            &["ai-agents".to_owned()],
            Duration::from_secs(600),
            Some("carol@example.com"),
        )
        .unwrap();
    let opts = s
        .opts("agent-n", &["ai-agents"], true)
        .pass(Some(token))
        .connect_attributes(HashMap::from([(
            "tollgate.reason".to_owned(),
            "INC-6 archive".to_owned(),
        )]));
    let mut agent = Conn::new(opts).await.unwrap();
    let held = tokio::spawn({
        let sql = format!("delete from {table} where id = 2");
        async move {
            let r = agent.query_drop(sql).await;
            (agent, r)
        }
    });
    let id = s.first_pending(&bob).await;
    let list = s.pending(&bob).await;
    assert_eq!(list[0]["agent_reason"], "INC-6 archive");
    assert_eq!(list[0]["actor"], "carol@example.com");
    let r = s
        .http
        .post(format!("{}/approvals/{id}/approve", s.admin))
        .bearer_auth(&bob)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_agent, result) = held.await.unwrap();
    result.unwrap();
    assert_eq!(count().await, 1, "run once approved");

    s.recorder.flush().await.unwrap();
    let mut store = Store::open(&Location::Sqlite(s.db.clone()), false)
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = store
        .of_types(&[kind::SESSION_START, kind::STATEMENT], "", "9999")
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    store.close().await;
    assert!(records.iter().any(|r| r["type"] == kind::SESSION_START
        && r["subject"] == "agent-n"
        && r["detail"]["reason"] == "INC-6 archive"
        && r["detail"]["actor"] == "carol@example.com"));
    let deletes: Vec<_> = records
        .iter()
        .filter(|r| {
            r["type"] == kind::STATEMENT
                && r["detail"]["sql"]
                    .as_str()
                    .is_some_and(|q| q.contains("delete"))
        })
        .collect();
    assert_eq!(deletes.len(), 3, "{deletes:?}");
    assert!(deletes[0]["detail"]["reason"].is_null());
    assert_eq!(deletes[1]["detail"]["reason"], "INC-5 stale row");
    assert_eq!(deletes[2]["detail"]["reason"], "INC-6 archive");
    assert_eq!(deletes[2]["detail"]["actor"], "carol@example.com");
}
