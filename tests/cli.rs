//! The `tollgate` binary as an operator runs it: config checks, `serve` with the example config,
//! SIGTERM, SIGHUP, and logs free of secrets. (`tollgate dev`: tests/cli_dev.rs; the audit and
//! approvals commands over running daemons: tests/cli_audit.rs.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::*;
use tokio_postgres::NoTls;

mod common;

#[test]
fn example_config_is_valid() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "config/tollgate.example.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let example = std::fs::read_to_string("config/tollgate.example.yaml").unwrap();
    // A misspelt field after the target's `user:` line.
    let at = example
        .lines()
        .position(|l| l.starts_with("    user: postgres"))
        .unwrap();
    let mut lines: Vec<&str> = example.lines().collect();
    lines.insert(at + 1, "    passwrd: x");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = at + 2;
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    assert!(err.contains("passwrd"), "{err}");

    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/tollgate.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tollgate.yaml"));
}

#[tokio::test]
async fn serve_the_example_config_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let example = std::fs::read_to_string("config/tollgate.example.yaml").unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        example
            .replace("127.0.0.1:15432", &format!("127.0.0.1:{port}"))
            .replace("shutdown_grace: 30s", "shutdown_grace: 3s"),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE_AGENT_PASSWORD", "agent-secret-from-env")
        .env("TOLLGATE_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!(
        "host=127.0.0.1 port={port} user=agent password=agent-secret-from-env dbname=test sslmode=disable"
    );
    let client = connect_when_up(&url).await;
    // Several connections, spread over the worker threads.
    let mut others = Vec::new();
    for _ in 0..6 {
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        others.push(c);
    }
    for (i, c) in others.iter().enumerate() {
        let v: i32 = c
            .query_one("select $1::int4", &[&(i as i32)])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, i as i32);
    }
    let running = tokio::spawn(async move {
        client
            .query_one("select pg_sleep(1)::text", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    running
        .await
        .unwrap()
        .expect("the running statement finishes during the drain");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(
        !log.contains("agent-secret-from-env"),
        "a secret reached the log:\n{log}"
    );
}

/// `serve` with a policy: SIGHUP reloads it without dropping the connection.
#[tokio::test]
async fn sighup_reloads_the_policy_on_live_connections() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - id: reads\n    match: { kinds: [read] }\n    action: allow\n",
    )
    .unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
policies: [policy.yaml]
policy_reload_interval: 1h
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE_AGENT_PASSWORD", "pw")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url =
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable");
    let client = connect_when_up(&url).await;
    client.query_one("select 1", &[]).await.unwrap();
    std::fs::write(&policy, "default: deny\nrules: []\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.query_one("select 1", &[]).await {
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("42501"));
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => panic!("SIGHUP did not reload the policy"),
        }
    }
    assert!(!client.is_closed(), "the connection stays");
    child.kill().unwrap();
    let _ = child.wait();
}

/// A PAN-heavy session at debug log level: no clear PAN in anything tollgate logs.
#[tokio::test]
async fn no_pan_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
audit:
  sqlite: audit.db
  signing_key: {{ file: signing.pem }}
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
        ),
    )
    .unwrap();
    keygen(dir.path());
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("TOLLGATE_AGENT_PASSWORD", "pw")
        .env("TOLLGATE_LOG", "trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url =
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable");
    let client = connect_when_up(&url).await;
    let pans = [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
    ];
    client
        .batch_execute("create temp table cards (pan text primary key, note text)")
        .await
        .unwrap();
    for pan in pans {
        client
            .execute("insert into cards values ($1, 'card ' || $1)", &[&pan])
            .await
            .unwrap();
        client
            .simple_query(&format!("select * from cards where pan = '{pan}'"))
            .await
            .unwrap();
        // Errors and notices that echo the number.
        let _ = client
            .simple_query(&format!("insert into cards values ('{pan}', 'dup')"))
            .await;
        let _ = client.simple_query(&format!("select '{pan}x'::int8")).await;
        let _ = client
            .batch_execute(&format!("do $$ begin raise notice 'card {pan}'; end $$"))
            .await;
    }
    // A malformed message carrying a PAN, which tollgate refuses.
    let _ = client.simple_query("selec '4111111111111111'").await;
    drop(client);
    // Names the client chooses: a database, a user, an application name.
    let odd = format!(
        "host=127.0.0.1 port={port} user=u4111111111111111 password=pw dbname=db5555555555554444 application_name=a378282246310005 sslmode=disable"
    );
    let _ = tokio_postgres::connect(&odd, NoTls).await;
    let wrong = format!(
        "host=127.0.0.1 port={port} user=6011111111111117 password=nope dbname=test sslmode=disable"
    );
    let _ = tokio_postgres::connect(&wrong, NoTls).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&mut child);
    let text = std::fs::read(&log).unwrap();
    assert!(!text.is_empty(), "trace logging produced output");
    assert_no_pan(&text, "the log");
    // JSON lines carry the connection and, once known, the recorded session.
    let session_lines = String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.contains("\"session\":\"s") && l.contains("\"name\":\"conn\""))
        .count();
    assert!(
        session_lines >= 2,
        "log lines with the session id: {session_lines}"
    );
    // The audit store: its files hold the whole session, masked.
    let store = common::audit_store_bytes(&dir.path().join("audit.db")).await;
    assert!(store.len() > 10_000, "the session was recorded");
    assert_no_pan(&store, "the audit store");
    assert!(
        !store.windows(b"nope".len()).any(|w| w == b"nope"),
        "a password in the store"
    );
    let verify = tollgate_cmd(&["audit", "verify", "--config"], &config);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
