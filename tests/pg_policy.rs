//! The example agent policy enforced through tollgate on the machine's PostgreSQL: blocked
//! statements inside a transaction and inside a pipeline, the connection used again, and
//! policy reloads that do not drop connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Proxy, sqlstate};
use futures_util::future;
use tokio_postgres::NoTls;
use tollgate::conn::policy_files::PolicyInspector;
use tollgate::pipeline::Stages;
use tollgate::policy::classify::SqlDialect;
use tollgate::policy::inspect::PolicyStage;

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// tollgate with `policy_file`, agents logging in with a static password in group ai-agents.
async fn proxy(policy_file: &std::path::Path) -> (Proxy, Arc<PolicyInspector>) {
    let inspector = Arc::new(
        PolicyInspector::load(vec![policy_file.to_owned()], SqlDialect::Postgres).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("agent-password");
    std::fs::write(&pw, common::AGENT_PASSWORD).unwrap();
    let yaml = format!(
        "
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, user: agent, groups: [ai-agents], password: {{ file: {} }} }}
",
        pw.display()
    );
    let stages = Stages {
        inspect: Arc::new(PolicyStage(inspector.clone())),
        record: None,
        approvals: None,
    };
    (Proxy::start_yaml(dir, &yaml, stages).await, inspector)
}

async fn example() -> (Proxy, Arc<PolicyInspector>) {
    proxy(std::path::Path::new("config/policies/agents.yaml")).await
}

#[tokio::test]
async fn blocked_statement_inside_a_transaction_then_the_connection_goes_on() {
    let (proxy, _) = example().await;
    let client = proxy.connect().await;
    client.batch_execute("begin").await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from pg_class", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let err = client
        .batch_execute("drop table pg_class_copy")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(
        message(&err),
        "tollgate: blocked by rule no-schema-change: schema changes go through migrations, not agents"
    );
    // Exactly as PostgreSQL after an error: the transaction is aborted until ROLLBACK.
    assert_eq!(
        sqlstate(&client.simple_query("select 1").await.unwrap_err()),
        "25P02"
    );
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(
        client
            .query_one("select 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );

    // A held write is refused with the approval rule, and nothing reached the server.
    let err = client
        .batch_execute("delete from pg_description where objoid = 0")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        message(&err).contains("agents-write-needs-approval"),
        "{}",
        message(&err)
    );
    // Multi-statement: one forbidden statement refuses the whole message.
    let err = client
        .simple_query("select 1; select pg_read_file('/etc/passwd')")
        .await
        .unwrap_err();
    assert!(message(&err).contains("no-dangerous-functions"));
    assert_eq!(
        client
            .query_one("select 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test]
async fn blocked_statement_inside_a_pipeline() {
    let (proxy, _) = example().await;
    let client = proxy.connect().await;
    let results = future::join_all((0..12).map(|i| {
        let client = &client;
        async move {
            match i {
                5 => client.query("select pg_ls_dir('/')", &[]).await.map(|_| -1),
                8 => client
                    .query("copy (select 1) to stdout", &[])
                    .await
                    .map(|_| -1),
                _ => client
                    .query_one("select $1::int4", &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0)),
            }
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        match i {
            5 | 8 => {
                let e = r.unwrap_err();
                assert_eq!(sqlstate(&e), "42501", "{i}");
            }
            _ => assert_eq!(r.unwrap(), i as i32),
        }
    }
    assert_eq!(
        client
            .query_one("select 99", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        99
    );
}

#[tokio::test]
async fn policy_reload_applies_to_live_connections_and_a_broken_file_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        "rules:\n  - id: reads\n    match: { kinds: [read] }\n    action: allow\n",
    )
    .unwrap();
    let (proxy, inspector) = proxy(&file).await;
    let client = proxy.connect().await;
    client.query_one("select 1", &[]).await.unwrap();
    // Tighten: nothing allowed any more. The connection stays, its next statement is refused.
    std::fs::write(&file, "default: deny\nrules: []\n").unwrap();
    inspector.reload().unwrap();
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains("default policy"));
    // A broken file is reported and the policy in force stays.
    std::fs::write(&file, "rules:\n  - id: x\n    action: sometimes\n").unwrap();
    let errors = inspector.reload().unwrap_err();
    assert!(
        errors[0].to_string().contains("policy.yaml:3:"),
        "{errors:?}"
    );
    assert_eq!(
        sqlstate(&client.query_one("select 1", &[]).await.unwrap_err()),
        "42501"
    );
    // Changed on disk: picked up by the watcher's check.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(
        &file,
        "rules:\n  - id: reads-again\n    match: { kinds: [read] }\n    action: allow\n",
    )
    .unwrap();
    inspector.reload_if_changed();
    assert_eq!(
        client
            .query_one("select 4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        4
    );
}

#[tokio::test]
async fn extended_protocol_is_decided_at_parse() {
    let (proxy, _) = example().await;
    let (client, conn) = tokio_postgres::connect(&proxy.url("test"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let err = client
        .prepare("update pg_description set description = '' ")
        .await
        .unwrap_err();
    assert!(
        message(&err).contains("no-unbounded-write"),
        "{}",
        message(&err)
    );
    let ok = client.prepare("select $1::text").await.unwrap();
    let row = client.query_one(&ok, &[&"fine"]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "fine");
}
