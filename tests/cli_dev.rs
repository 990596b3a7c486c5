//! `tollgate dev` as a newcomer runs it: the banner's commands work as printed, and the dev
//! issuer serves only the approvals page.

use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli::*;
use tokio_postgres::NoTls;

mod common;

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
