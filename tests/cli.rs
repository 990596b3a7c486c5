//! The `tollgate` binary as an operator runs it: config checks, `serve` with the example config,
//! SIGTERM, and logs free of secrets.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

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

/// Connects once the spawned tollgate accepts connections (within 10 s).
async fn connect_when_up(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("tollgate did not come up: {e}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// `tollgate dev` as a new user meets it: the printed psql command works as printed, and
/// `token mint` makes more tokens from the same folder.
#[tokio::test]
async fn dev_mode_prints_a_working_psql_command() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let (pg_port, admin_port, my_port) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(BIN)
        .arg("dev")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{pg_port}")])
        .args(["--mysql-listen", &format!("127.0.0.1:{my_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let command = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("banner within 20 s")
            .unwrap()
            .expect("tollgate dev exited early");
        banner.push_str(&line);
        banner.push('\n');
        if line.trim_start().starts_with("mariadb ") {
            break banner
                .lines()
                .find(|l| l.trim_start().starts_with("PGPASSWORD="))
                .expect("the psql line comes first")
                .trim()
                .to_owned();
        }
    };
    let mariadb = banner
        .lines()
        .find(|l| l.trim_start().starts_with("mariadb "))
        .unwrap()
        .trim()
        .to_owned();
    // The mariadb command as printed reaches MariaDB through tollgate; its reads are masked.
    let out = tokio::process::Command::new("sh")
        .args([
            "-c",
            &format!("{mariadb} -N -e \"select 40 + 2, '4111111111111111'\""),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{mariadb}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim().lines().last(),
        Some("42\t411111******1111")
    );
    assert!(banner.contains("Not for production"), "{banner}");
    // Exactly as printed, with a query on standard input.
    let out = tokio::process::Command::new("sh")
        .args(["-c", &format!("echo 'select 40 + 2' | {command} -At")])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    let mint = Command::new(BIN)
        .args([
            "token",
            "mint",
            "--sub",
            "ci-bot",
            "--ttl",
            "5m",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        mint.status.success(),
        "{}",
        String::from_utf8_lossy(&mint.stderr)
    );
    let token = String::from_utf8(mint.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "the token alone on stdout");
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["sub"], "ci-bot");
    assert_eq!(claims["groups"], serde_json::json!(["ai-agents"]));
    let url = format!(
        "host=127.0.0.1 port={pg_port} user=ci-bot dbname=test sslmode=disable password={token}"
    );
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let db: String = client
        .query_one("select current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "test", "every database is reached by its own name");
    // The example policy is in force: agents read, but do not change the schema.
    let err = client
        .batch_execute("drop table if exists tollgate_never")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    assert!(data_dir.join("policy.yaml").exists());

    // A data change waits for a DBA, who approves it from the command line.
    let table = format!("tollgate_dev_approval_{}", std::process::id());
    let (direct, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    direct
        .batch_execute(&format!(
            "drop table if exists {table}; create table {table} (v int)"
        ))
        .await
        .unwrap();
    let held = tokio::spawn({
        let sql = format!("insert into {table} values (1)");
        async move { client.execute(sql.as_str(), &[]).await }
    });
    let mint = Command::new(BIN)
        .args([
            "token",
            "mint",
            "--sub",
            "dba-dana",
            "--groups",
            "dba",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .unwrap();
    let approver = String::from_utf8(mint.stdout).unwrap().trim().to_owned();
    let approvals = |args: &[&str]| {
        Command::new(BIN)
            .arg("approvals")
            .args(args)
            .env("TOLLGATE_TOKEN", &approver)
            .env(
                "TOLLGATE_ADMIN_URL",
                format!("http://127.0.0.1:{admin_port}"),
            )
            .output()
            .unwrap()
    };
    let mut id = None;
    for _ in 0..100 {
        let out = approvals(&["list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(first) = list.as_array().and_then(|l| l.first()) {
            id = Some(first["id"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("the insert is held");
    let out = approvals(&["approve", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        held.await.unwrap().unwrap(),
        1,
        "the insert ran once approved"
    );
    direct
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    child.kill().await.unwrap();
}

/// Issue #19, items 7 and 9: `tollgate dev` in its own folder, as a newcomer runs it. The
/// sessions, audit and approvals commands find its configuration (and its admin port) without
/// `--config`, and say so on stderr; the banner's mariadb line runs cleanly on the installed
/// client; the dev issuer's code flow serves only the approvals page's client and redirect URI,
/// so an HTTP caller gets no token that logs in to a database or decides approvals.
#[tokio::test]
async fn dev_mode_in_its_own_folder() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (pg_port, admin_port, my_port) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(BIN)
        .arg("dev")
        .args(["--listen", &format!("127.0.0.1:{pg_port}")])
        .args(["--mysql-listen", &format!("127.0.0.1:{my_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("banner within 20 s")
            .unwrap()
            .expect("tollgate dev exited early");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    let printed = |start: &str| {
        banner
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line in\n{banner}"))
            .to_owned()
    };
    assert!(banner.contains("tollgate sessions list\n"), "{banner}");
    let signin_code = banner
        .split_once("sign-in code ")
        .and_then(|(_, rest)| rest.split(')').next())
        .expect("the banner prints the approvals page's sign-in code")
        .to_owned();

    // The mariadb line as printed: it runs, and the client has nothing to complain about.
    let mariadb = printed("mariadb ");
    let out = tokio::process::Command::new("sh")
        .args(["-c", &format!("{mariadb} -N -e 'select 6 * 7'")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{mariadb}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{mariadb}");
    // The psql line records a session.
    let psql = printed("PGPASSWORD=");
    let out = tokio::process::Command::new("sh")
        .args(["-c", &format!("echo 'select 40 + 2' | {psql} -At")])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // The operator's commands, in the folder, with no configuration named.
    let run = |args: &[&str], folder: &std::path::Path, token: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(folder)
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_ADMIN_URL")
            .env_remove("TOLLGATE_TOKEN")
            .env("USER", "newcomer");
        if let Some(t) = token {
            c.env("TOLLGATE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let found = "tollgate: using the dev configuration .tollgate-dev/tollgate.yaml";
    let mut sessions = serde_json::Value::Null;
    for _ in 0..50 {
        let out = run(&["sessions", "list", "--json"], dir.path(), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(found), "{stderr}");
        sessions = serde_json::from_slice(&out.stdout).unwrap();
        if sessions.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sessions[0]["subject"], "dev-agent", "{sessions}");
    let out = run(&["audit", "verify"], dir.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(found));
    let dba = run(
        &["token", "mint", "--sub", "dana", "--groups", "dba"],
        dir.path(),
        None,
    );
    let dba = String::from_utf8(dba.stdout).unwrap().trim().to_owned();
    let out = run(&["approvals", "list", "--json"], dir.path(), Some(&dba));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{admin_port}")),
        "the dev admin port, not the default: {stderr}"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    // Elsewhere, nothing is guessed.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(&["sessions", "list"], elsewhere.path(), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --config FILE"));

    // The dev issuer's code flow: an agent asking for a token of its own choosing is refused.
    let admin = format!("http://127.0.0.1:{admin_port}");
    let callback = format!("{admin}/approvals/callback");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "a-verifier-of-enough-length-for-pkce-0123456789";
    let challenge = B64URL.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
    );
    let authorize_with = |client_id: &str, redirect_uri: &str, signin_code: &str| {
        http.post(format!("{admin}/dev/authorize"))
            .form(&[
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("state", "s"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("subject", "agent-x"),
                ("groups", "ai-agents,dba"),
                ("signin_code", signin_code),
            ])
            .send()
    };
    let authorize =
        |client_id: &str, redirect_uri: &str| authorize_with(client_id, redirect_uri, &signin_code);
    for (client_id, redirect_uri) in [
        ("tollgate", "http://127.0.0.1:1/cb"),
        ("tollgate", callback.as_str()),
        ("tollgate-approvals", "http://127.0.0.1:1/cb"),
        ("anything", callback.as_str()),
    ] {
        let r = authorize(client_id, redirect_uri).await.unwrap();
        assert_eq!(r.status(), 400, "{client_id} {redirect_uri}");
        assert!(r.headers().get("location").is_none());
        let form = reqwest::Url::parse_with_params(
            &format!("{admin}/dev/authorize"),
            &[
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("state", "s"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        let r = http.get(form).send().await.unwrap();
        assert_eq!(
            r.status(),
            400,
            "sign-in form for {client_id} {redirect_uri}"
        );
    }
    // Not even the approvals page's sign-in, without the code the banner printed: an agent
    // reaching the admin port cannot sign in as an approver.
    for wrong in ["", "guess"] {
        let r = authorize_with("tollgate-approvals", &callback, wrong)
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("location").is_none());
    }
    // The approvals page's own client gets a code, redeemable only as that client, for an ID
    // token whose audience is that client.
    let code = |r: reqwest::Response| {
        assert_eq!(r.status(), 303);
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(&callback));
        location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let redeem = |code: String, client_id: &'static str| {
        http.post(format!("{admin}/dev/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", callback.as_str()),
                ("client_id", client_id),
                ("code_verifier", verifier),
            ])
            .send()
    };
    let stolen = code(authorize("tollgate-approvals", &callback).await.unwrap());
    let r = redeem(stolen, "tollgate").await.unwrap();
    assert_eq!(
        r.status(),
        400,
        "a code is not redeemed as the agents' audience"
    );
    let good = code(authorize("tollgate-approvals", &callback).await.unwrap());
    let body: serde_json::Value = redeem(good, "tollgate-approvals")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = body["id_token"].as_str().expect("an ID token").to_owned();
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(id_token.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    assert_eq!(claims["aud"], "tollgate-approvals");
    // That ID token neither logs in to a database nor decides approvals.
    let url = format!(
        "host=127.0.0.1 port={pg_port} user=agent-x dbname=test sslmode=disable password={id_token}"
    );
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("no database login with an approvals-page ID token");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));
    let r = http
        .get(format!("{admin}/approvals"))
        .bearer_auth(&id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    child.kill().await.unwrap();
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

fn assert_no_pan(text: &[u8], what: &str) {
    let found = tollgate::mask::pan::find_all(text);
    assert!(
        found.is_empty(),
        "clear PANs in {what}: {:?}",
        found
            .iter()
            .map(|f| String::from_utf8_lossy(&text[f.range.clone()]).into_owned())
            .collect::<Vec<_>>()
    );
}

/// Writes `signing.pem` in `dir` with `tollgate audit keygen`; returns the public key.
fn keygen(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(dir.join("signing.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn tollgate_cmd(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg(config)
        .env("USER", "auditor-alice")
        .output()
        .unwrap()
}

fn sigterm(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("tollgate did not stop on SIGTERM");
}

fn audited_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
shutdown_grace: 1s
audit:
  sqlite: audit.db
  signing_key: {{ file: signing.pem }}
  checkpoint_interval: 1s
  chain: cli-test
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [ai-agents], password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
        ),
    )
    .unwrap();
    config
}

fn serve(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("TOLLGATE_AGENT_PASSWORD", "pw")
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

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
        "3.4.1", "7.2", "8.2.1", "10.2.1.3", "10.3", "10.7", "PASSED",
    ] {
        assert!(text.contains(req), "{req} missing from the report");
    }
    // Every read above was itself recorded (PCI DSS 10.2.1.3), by who ran it.
    let md = tollgate_cmd(&["audit", "report", "--config"], &config);
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(text.contains("cli:auditor-alice"), "{text}");

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
