//! The operator's and auditor's commands over running daemons: audit verify, export, report,
//! sessions, metrics and readiness, and two instances sharing a PostgreSQL store.

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli::*;
use tokio_postgres::NoTls;

mod common;

/// The operator's and auditor's commands over a recorded session: verify, sessions, replay,
/// a bundle verified with the public key only, a report, and tampering caught.
#[tokio::test]
async fn audit_commands_over_a_recorded_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = audited_config(dir.path(), port);
    let public_key = keygen(dir.path());
    let log = dir.path().join("stderr.log");
    let mut child = serve(&config, &log);
    let url = format!(
        "host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable application_name=claude"
    );
    let client = connect_when_up(&url).await;
    client
        .batch_execute(
            "create temp table cards (pan text); insert into cards values ('4111111111111111')",
        )
        .await
        .unwrap();
    let rows = client.simple_query("select pan from cards").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("411111******1111"))
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&mut child);

    let verify = tollgate_cmd(&["audit", "verify", "--config"], &config);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(text.contains("chain cli-test: ok"), "{text}");

    let list = tollgate_cmd(&["sessions", "list", "--json", "--config"], &config);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let sessions: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    let s = &sessions[0];
    assert_eq!(s["subject"], "agent");
    assert_eq!(s["application_name"], "claude");
    assert_eq!(s["statements"], 2);
    let id = s["id"].as_str().unwrap().to_owned();
    let table = tollgate_cmd(&["sessions", "list", "--config"], &config);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&id));

    let replay = Command::new(BIN)
        .args(["sessions", "replay", &id, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(text.contains("select pan from cards"), "{text}");
    assert!(text.contains("411111******1111"), "{text}");
    assert!(text.contains("decision: allow"), "{text}");

    // A bundle carries what an auditor needs: verified elsewhere with the public key alone.
    let bundle = dir.path().join("evidence.jsonl");
    let export = Command::new(BIN)
        .args(["audit", "export", "--format", "bundle", "--out"])
        .arg(&bundle)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("evidence.jsonl");
    std::fs::copy(&bundle, &copy).unwrap();
    let check = Command::new(BIN)
        .args(["audit", "verify", "--public-key", &public_key, "--bundle"])
        .arg(&copy)
        .current_dir(elsewhere.path())
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let tampered = std::fs::read_to_string(&copy).unwrap().replacen(
        "select pan from cards",
        "select 1 from cards",
        1,
    );
    std::fs::write(&copy, tampered).unwrap();
    let check = Command::new(BIN)
        .args(["audit", "verify", "--public-key", &public_key, "--bundle"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("FAILED"));

    // OCSF and the report.
    let ocsf = tollgate_cmd(
        &["audit", "export", "--format", "ocsf", "--config"],
        &config,
    );
    let text = String::from_utf8_lossy(&ocsf.stdout);
    assert!(text.contains("\"class_uid\":3002") && text.contains("\"class_uid\":6005"));
    let report = tollgate_cmd(
        &["audit", "report", "--format", "html", "--config"],
        &config,
    );
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    for req in [
        "3.4.1", "7.2", "8.2.1", "10.2.1.3", "10.2.2", "10.3.3", "10.4.1", "10.5.1", "10.6.1",
        "10.7", "PASSED",
    ] {
        assert!(text.contains(req), "{req} missing from the report");
    }
    // Every read above was itself recorded (PCI DSS 10.2.1.3), by the operating-system
    // account that ran it (not by `$USER`, which the caller sets).
    let md = tollgate_cmd(&["audit", "report", "--config"], &config);
    let text = String::from_utf8_lossy(&md.stdout);
    let account = format!(
        "os:{}",
        String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
    );
    assert!(text.contains(&format!("| {account} | os_user |")), "{text}");
    assert!(!text.contains("auditor-alice"), "{text}");

    // One changed byte in the store: verify fails and names the record.
    let changed = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(\"update audit_records set body=replace(body,'select pan','select pam') where chain='cli-test' and body like '%select pan%'\")\nc.commit()")
        .arg(dir.path().join("audit.db"))
        .status()
        .unwrap();
    assert!(changed.success());
    let verify = tollgate_cmd(&["audit", "verify", "--config"], &config);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{text}");
    assert!(
        text.contains("chain cli-test: FAILED") && text.contains("record modified"),
        "{text}"
    );
}

/// `kill -9` during traffic: on restart the store verifies and the unclean stop is recorded.
#[tokio::test]
async fn a_killed_daemon_leaves_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = audited_config(dir.path(), port);
    keygen(dir.path());
    let log = dir.path().join("stderr.log");
    let mut child = serve(&config, &log);
    let url =
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable");
    let client = connect_when_up(&url).await;
    let traffic = tokio::spawn(async move {
        for i in 0.. {
            if client
                .simple_query(&format!("select {i}, repeat('x', 100)"))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let _ = traffic.await;

    let mut child = serve(&config, &log);
    let client = connect_when_up(&url).await;
    client.simple_query("select 'after restart'").await.unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&mut child);
    let verify = tollgate_cmd(&["audit", "verify", "--config"], &config);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    let export = tollgate_cmd(
        &["audit", "export", "--format", "jsonl", "--config"],
        &config,
    );
    let text = String::from_utf8_lossy(&export.stdout);
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"type\":\"daemon_start\""))
        .collect();
    assert_eq!(starts.len(), 2, "{text:.500}");
    assert!(
        starts[1].contains("\"previous_stop\":\"unclean\""),
        "{}",
        starts[1]
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("\"type\":\"statement\""))
            .count()
            > 10
    );
}

/// `/metrics` moves with traffic; `/readyz` fails while a target is down or the audit store
/// cannot write, and recovers.
#[tokio::test]
async fn metrics_and_readiness_follow_traffic_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port, down_port) = (free_port(), free_port(), free_port());
    keygen(dir.path());
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
admin: {{ listen: 127.0.0.1:{admin_port} }}
shutdown_grace: 1s
audit:
  sqlite: audit.db
  signing_key: {{ file: signing.pem }}
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
  - name: spare
    address: 127.0.0.1:{down_port}
    user: postgres
    client_auth: {{ method: scram-sha-256, password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = serve(&config, &log);
    let url =
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable");
    let client = connect_when_up(&url).await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{admin_port}{path}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (_, before) = get("/metrics").await;
    for _ in 0..5 {
        client
            .simple_query("select '4111111111111111'")
            .await
            .unwrap();
    }
    let (status, after) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(&after, "tollgate_statements_total")
            >= metric(&before, "tollgate_statements_total") + 5.0,
        "{after}"
    );
    assert!(
        metric(&after, "tollgate_masked_values_total") >= 5.0,
        "{after}"
    );
    assert_eq!(metric(&after, "tollgate_connections_open"), 1.0, "{after}");
    assert!(
        after.contains("tollgate_upstream_connect_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("tollgate_audit_write_seconds"), "{after}");

    // A target down: not ready, and says which.
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"spare\":\"unreachable\"") && body.contains("\"test\":\"ok\""),
        "{body}"
    );
    let spare = std::net::TcpListener::bind(("127.0.0.1", down_port)).unwrap();
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"audit_store\":\"ok\""), "{body}");

    // The audit store locked by another process: not ready until it frees up.
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.readline()\nc.execute('COMMIT')")
        .arg(dir.path().join("audit.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    let mut unready = false;
    for _ in 0..100 {
        let _ = client.simple_query("select 1").await;
        let (status, body) = get("/readyz").await;
        if status == 503 && body.contains("\"audit_store\":\"failing\"") {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready, "readiness follows the store");
    let (_, m) = get("/metrics").await;
    assert_eq!(metric(&m, "tollgate_audit_store_failing"), 1.0);
    use std::io::Write;
    writeln!(locker.stdin.as_mut().unwrap()).unwrap();
    locker.wait().unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if get("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once the store writes");
    drop(spare);
    drop(client);
    sigterm(&mut child);
}

/// Two tollgates share one PostgreSQL audit store, each with its own chain: traffic on both,
/// one killed (-9) and restarted, and every chain verifies.
#[tokio::test]
async fn two_instances_share_a_postgres_store() {
    let db = format!("tollgate_two_{}", std::process::id());
    let (admin, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=postgres", NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("drop database if exists {db}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("create database {db}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    let mut ports = Vec::new();
    let mut configs = Vec::new();
    for name in ["pod-a", "pod-b"] {
        let port = free_port();
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: {{ postgres: 127.0.0.1:{port} }}
shutdown_grace: 1s
audit:
  postgres: {{ env: TOLLGATE_AUDIT_URL }}
  chain: {name}
  signing_key: {{ file: signing.pem }}
  checkpoint_interval: 1s
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
            ),
        )
        .unwrap();
        ports.push(port);
        configs.push(config);
    }
    let store_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let start = |config: &std::path::Path| {
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("TOLLGATE_AGENT_PASSWORD", "pw")
            .env("TOLLGATE_AUDIT_URL", &store_url)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let url = |port: u16| {
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable")
    };
    let mut a = start(&configs[0]);
    let mut b = start(&configs[1]);
    let ca = connect_when_up(&url(ports[0])).await;
    let cb = connect_when_up(&url(ports[1])).await;
    let traffic = |c: tokio_postgres::Client, tag: &'static str| {
        tokio::spawn(async move {
            for i in 0.. {
                if c.simple_query(&format!("select '{tag}', {i}"))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let ta = traffic(ca, "a");
    let tb = traffic(cb, "b");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill().unwrap();
    let _ = a.wait();
    let _ = ta.await;
    let mut a = start(&configs[0]);
    let ca = connect_when_up(&url(ports[0])).await;
    ca.simple_query("select 'a again'").await.unwrap();
    drop(ca);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&mut a);
    sigterm(&mut b);
    let _ = tb.await;
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&configs[0])
        .env("TOLLGATE_AUDIT_URL", &store_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for chain in ["chain pod-a: ok", "chain pod-b: ok"] {
        assert!(text.contains(chain), "{chain} in {text}");
    }
    admin
        .batch_execute(&format!("drop database {db} with (force)"))
        .await
        .unwrap();
}

/// Two tollgates sharing a PostgreSQL store: a statement held on one is approved through the
/// other's API, and the waiting client on the first gets its result.
#[tokio::test]
async fn a_statement_held_on_one_instance_is_approved_through_another() {
    use std::sync::Arc;
    let db = format!("tollgate_appr2_{}", std::process::id());
    let table = format!("appr2_{}", std::process::id());
    let (pg, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=postgres", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pg.batch_execute(&format!("drop database if exists {db}"))
        .await
        .unwrap();
    pg.batch_execute(&format!("create database {db}"))
        .await
        .unwrap();
    let (test_db, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    test_db
        .batch_execute(&format!(
            "drop table if exists {table}; create table {table} (v int)"
        ))
        .await
        .unwrap();

    // An identity provider both instances trust (the dev issuer, served by this test).
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://{}/dev", listener.local_addr().unwrap());
    let issuer = Arc::new(tollgate::auth::dev::DevIssuer::open(dir.path(), &issuer_url).unwrap());
    let state = Arc::new(tollgate::admin::AdminState {
        dev_issuer: Some(Arc::clone(&issuer)),
        ..Default::default()
    });
    tokio::spawn(tollgate::admin::serve(
        listener,
        state,
        std::future::pending(),
    ));

    keygen(dir.path());
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "default: deny
rules:
  - id: read
    match: {{ groups: [ai-agents], kinds: [read, session, transaction] }}
    action: allow
  - id: writes
    match: {{ groups: [ai-agents], kinds: [write], tables: [{table}] }}
    action: require_approval
    reason: checked by a DBA
    approval: {{ group: dba, timeout: 60s }}
"
        ),
    )
    .unwrap();
    let mut pg_ports = Vec::new();
    let mut admin_ports = Vec::new();
    let mut children = Vec::new();
    for name in ["pod-a", "pod-b"] {
        let (port, admin) = (free_port(), free_port());
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: {{ postgres: 127.0.0.1:{port} }}
admin: {{ listen: 127.0.0.1:{admin} }}
shutdown_grace: 1s
identity:
  allow_plaintext_loopback: true
  issuers:
    - issuer: {issuer_url}
      audiences: [{aud}]
      algorithms: [EdDSA]
policies: [policy.yaml]
approvals: {{}}
audit:
  postgres: {{ env: TOLLGATE_AUDIT_URL }}
  chain: {name}
  signing_key: {{ file: signing.pem }}
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [ai-agents], password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
",
                aud = tollgate::auth::dev::AUDIENCE
            ),
        )
        .unwrap();
        children.push(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .env("TOLLGATE_AGENT_PASSWORD", "pw")
                .env(
                    "TOLLGATE_AUDIT_URL",
                    format!("postgres://postgres@127.0.0.1:5432/{db}"),
                )
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        pg_ports.push(port);
        admin_ports.push(admin);
    }
    let agent = connect_when_up(&format!(
        "host=127.0.0.1 port={} user=agent password=pw dbname=test sslmode=disable",
        pg_ports[0]
    ))
    .await;
    let held = tokio::spawn({
        let sql = format!("insert into {table} values (7)");
        async move { agent.execute(sql.as_str(), &[]).await }
    });
    let bob = issuer
        .mint("bob", &["dba".into()], Duration::from_secs(300))
        .unwrap();
    let http = reqwest::Client::new();
    let b = format!("http://127.0.0.1:{}", admin_ports[1]);
    let mut id = None;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("{b}/approvals"))
            .bearer_auth(&bob)
            .send()
            .await
            && r.status() == 200
        {
            let list: Vec<serde_json::Value> = r.json().await.unwrap();
            if let Some(first) = list.first() {
                id = Some(first["id"].as_str().unwrap().to_owned());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("instance B lists what instance A holds");
    let r = http
        .post(format!("{b}/approvals/{id}/approve"))
        .bearer_auth(&bob)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let n = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("woken by the other instance's decision")
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    let count: i64 = test_db
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    for mut c in children {
        sigterm(&mut c);
    }
    test_db
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    pg.batch_execute(&format!("drop database {db} with (force)"))
        .await
        .unwrap();
}
