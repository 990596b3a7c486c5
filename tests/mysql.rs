//! tollgate's MySQL listener in front of the machine's MariaDB (127.0.0.1:3306): agent tokens
//! through the cleartext plugin over TLS, the policy in the MySQL dialect, masking in text and
//! binary rows and in errors, approvals, KILL mapping, malformed packets, the mariadb CLI, and
//! the audit trail verified.

mod common;

use std::time::Duration;

use common::mysql::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::audit::store::Location;
use tollgate::audit::{Store, verify};

#[tokio::test]
async fn text_and_binary_rows_errors_and_multi_results_are_masked() {
    let s = setup("rows").await;
    let mut c = s.agent("agent-1", &["ai-agents"]).await;
    let t = &s.table;

    // Text protocol.
    let rows: Vec<(u64, String, String, String, String, String)> = c
        .query(format!(
            "select id, pan, cast(num as char), cast(amount as char), cast(doc as char), note from {t} order by id"
        ))
        .await
        .unwrap();
    assert_eq!(rows[0].1, "411111******1111");
    assert_eq!(rows[0].2, "555555******4444");
    assert_eq!(rows[0].4, "{\"card\": \"378282*****0005\"}");
    assert_eq!(rows[0].5, "call 4111 11** **** 1111 now");
    assert_eq!(rows[1].1, "none");
    // Numbers keep their type: masked digits are zeros.
    let (num, amount): (i64, String) = c
        .query_first(format!("select num, amount from {t} where id = 1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(num, 5555550000004444);
    assert_eq!(amount, "4111110000001111.00");

    // Binary protocol: prepared statements.
    let stmt = c
        .prep(format!(
            "select id, pan, num, amount, doc, note from {t} where id = ?"
        ))
        .await
        .unwrap();
    let row: mysql_async::Row = c.exec_first(&stmt, (1,)).await.unwrap().unwrap();
    let pan: String = row.get(1).unwrap();
    let num: i64 = row.get(2).unwrap();
    let amount: String = row.get(3).unwrap();
    let doc: String = row.get(4).unwrap();
    assert_eq!(pan, "411111******1111");
    assert_eq!(num, 5555550000004444);
    assert_eq!(amount, "4111110000001111.00");
    no_pan(&doc, "a binary JSON value");
    let again: Vec<(u64, String)> = c
        .exec(format!("select id, pan from {t} where id > ?"), (0,))
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    c.close(stmt).await.unwrap();

    // Several statements, several result sets.
    let mut result = c
        .query_iter(format!(
            "select pan from {t} where id = 1; select 2; select note from {t} where id = 1"
        ))
        .await
        .unwrap();
    let first: Vec<String> = result.collect().await.unwrap();
    let second: Vec<u32> = result.collect().await.unwrap();
    let third: Vec<String> = result.collect().await.unwrap();
    assert_eq!(first, vec!["411111******1111".to_string()]);
    assert_eq!(second, vec![2]);
    no_pan(&third[0], "the third result");
    drop(result);

    // Errors: a duplicate key names the value; through tollgate it arrives masked, in the
    // text and the binary protocol.
    let mut op = s.agent("op-1", &["operators"]).await;
    let e = op
        .query_drop(format!(
            "insert into {t} (id, pan) values (9, '4111111111111111')"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1062, "{e}");
    assert!(message(&e).contains("'411111******1111'"), "{e}");
    let e = op
        .exec_drop(
            format!("insert into {t} (id, pan) values (?, ?)"),
            (10, "5555555555554444"),
        )
        .await;
    assert!(e.is_ok(), "a new value is inserted: {e:?}");
    let e = op
        .exec_drop(
            format!("insert into {t} (id, pan) values (?, ?)"),
            (11, "5555555555554444"),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1062);
    no_pan(&message(&e), "a binary-protocol error");
    op.query_drop(format!("delete from {t} where id = 10"))
        .await
        .unwrap();
    // Warnings come back as rows, masked.
    c.query_drop("select cast('4111111111111111x' as signed)")
        .await
        .unwrap();
    let warnings: Vec<(String, u32, String)> = c.query("show warnings").await.unwrap();
    assert!(!warnings.is_empty());
    for w in &warnings {
        no_pan(&w.2, "a warning");
    }
    drop(op);
    let e = c.query_drop("drop table nothing").await.unwrap_err();
    assert_eq!(code(&e), 1227);
    c.disconnect().await.unwrap();

    // Everything was recorded masked, and the chain verifies.
    let bytes = s.store_bytes().await;
    let found = tollgate::mask::pan::find_all(&bytes);
    assert!(found.is_empty(), "the audit store holds PANs: {found:?}");
    let mut store = Store::open(&Location::Sqlite(s.db.clone()), false)
        .await
        .unwrap();
    let reports = verify::store(&mut store, &s.key).await.unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    // The replay of the agent's session shows its masked rows and its errors.
    let period = tollgate::audit::export::Period {
        since: None,
        until: None,
    };
    let sessions = tollgate::audit::sessions::list(&mut store, &period)
        .await
        .unwrap();
    let mine = sessions
        .iter()
        .find(|x| x.subject.as_deref() == Some("agent-1"))
        .expect("the agent's session is listed");
    assert!(mine.end.is_some(), "{mine:?}");
    let replay: String = tollgate::audit::sessions::timeline(&mut store, &mine.id)
        .await
        .unwrap()
        .iter()
        .map(tollgate::audit::sessions::render)
        .collect();
    assert!(replay.contains("│ 411111******1111"), "{replay}");
    assert!(replay.contains("ERROR 1227"), "{replay}");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("COM_STMT_EXECUTE"), "commands are recorded");
    assert!(
        text.contains(r#""values":["10","555555******4444"]"#),
        "execute parameters are recorded, masked"
    );
    assert!(
        text.contains("\"protocol\":\"mysql\""),
        "sessions say their protocol"
    );
}

#[tokio::test]
async fn blocked_statements_leave_the_connection_usable() {
    let s = setup("block").await;
    let mut c = s.agent("agent-2", &["ai-agents"]).await;
    for sql in [
        format!("drop table {}", s.table),
        "create table x (a int)".to_string(),
        "select 1 /*! ; drop table nothing */".to_string(),
        format!("select * from {} into outfile '/tmp/x'", s.table),
        "load data local infile '/etc/passwd' into table x".to_string(),
        "kill query 1".to_string(),
        "selec 1".to_string(),
        // MariaDB runs /*M! ... */ text; the classifier would not see it.
        "select 1 /*M! , sleep(5) */".to_string(),
        // Settings that change how SQL or results are read are pinned.
        "set names latin1".to_string(),
        "set session sql_mode = 'ANSI_QUOTES'".to_string(),
        "set @@character_set_results = utf32".to_string(),
        // Another database, by a qualified name.
        "select user, host from mysql.user".to_string(),
    ] {
        let e = c.query_drop(&sql).await.unwrap_err();
        assert!(matches!(code(&e), 1227 | 1044), "{sql}: {e}");
        let one: u32 = c.query_first("select 1").await.unwrap().unwrap();
        assert_eq!(one, 1, "usable after {sql}");
    }
    // The session reads SQL as the classifier does, and SET NAMES utf8mb4 is fine.
    c.query_drop("set names utf8mb4").await.unwrap();
    let mode: String = c.query_first("select @@sql_mode").await.unwrap().unwrap();
    assert!(
        !mode.contains("ANSI_QUOTES") && !mode.contains("NO_BACKSLASH_ESCAPES"),
        "{mode}"
    );
    let e = c.prep("drop table nothing").await.unwrap_err();
    assert_eq!(code(&e), 1227);
    assert!(message(&e).contains("no-schema-change"), "{e}");
    // Another database than the target's is refused, by USE and by COM_INIT_DB.
    let e = c.query_drop("use mysql").await.unwrap_err();
    assert_eq!(code(&e), 1044, "{e}");
    let e = c.query_drop("select 1; use mysql").await.unwrap_err();
    assert_eq!(code(&e), 1044, "{e}");
    let e = c.reset().await;
    assert!(e.is_ok(), "COM_RESET_CONNECTION is relayed");
    let db: Option<String> = c.query_first("select database()").await.unwrap().unwrap();
    assert_eq!(db.as_deref(), Some("test"));
    c.ping().await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn an_approval_round_trip() {
    let s = setup("appr").await;
    let mut c = s.agent("agent-3", &["ai-agents"]).await;
    let t = s.table.clone();
    let held = tokio::spawn(async move {
        let r = c
            .query_drop(format!("update {t} set note = 'approved' where id = 2"))
            .await;
        (r, c)
    });
    let approver = s.token("dba-1", &["dba"]);
    let id = s.first_pending(&approver).await;
    assert_eq!(s.pending(&approver).await.len(), 1, "the update is held");
    let r = s
        .http
        .post(format!("{}/approvals/{id}/approve", s.admin))
        .bearer_auth(&approver)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (r, mut c) = held.await.unwrap();
    r.unwrap();
    let note: String = c
        .query_first(format!("select note from {} where id = 2", s.table))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note, "approved");
    // A denial arrives as the statement's error.
    let t = s.table.clone();
    let held = tokio::spawn(async move {
        let r = c
            .query_drop(format!("update {t} set note = 'denied' where id = 2"))
            .await;
        (r, c)
    });
    let id = s.first_pending(&approver).await;
    let r = s
        .http
        .post(format!("{}/approvals/{id}/deny", s.admin))
        .bearer_auth(&approver)
        .json(&serde_json::json!({"reason": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (r, mut c) = held.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(code(&e), 1227);
    assert!(message(&e).contains("denied by dba-1"), "{e}");
    let one: u32 = c.query_first("select 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn kill_query_maps_tollgate_ids_to_upstream_threads_of_the_same_identity() {
    let s = setup("kill").await;
    let mut victim = s.agent("op-2", &["operators"]).await;
    let victim_id = victim.id();
    let mut killer = s.agent("op-2", &["operators"]).await;
    let mut stranger = s.agent("op-3", &["operators"]).await;
    let sleeping = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r: Result<Option<u32>, _> = victim.query_first("select sleep(20)").await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another identity's connection reads as unknown.
    let e = stranger
        .query_drop(format!("kill query {victim_id}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1094, "{e}");
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .await
        .unwrap();
    let (r, took) = sleeping.await.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "the sleep was cut short: {took:?}"
    );
    // MariaDB answers an interrupted SLEEP with 1 (or error 1317).
    match r {
        Ok(v) => assert_eq!(v, Some(1)),
        Err(e) => assert_eq!(code(&e), 1317),
    }
    // KILL hidden behind comments is still mapped; beside another statement it is refused.
    let e = killer
        .query_drop(format!("select 1; kill {victim_id}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1227, "{e}");
    let e = stranger
        .query_drop(format!("/**/KILL/**/{victim_id}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1094, "{e}");
    // Ids tollgate never gave out are unknown too.
    let e = killer
        .query_drop("kill query 4000000000")
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1094);
}

#[tokio::test]
async fn tokens_need_tls_or_loopback_and_bad_tokens_are_refused() {
    let s = setup("auth").await;
    // TLS with the cleartext plugin (the normal case) works; so does loopback plaintext here.
    let mut c = Conn::new(s.opts("agent-4", &["ai-agents"], true))
        .await
        .unwrap();
    c.ping().await.unwrap();
    let mut c = Conn::new(s.opts("agent-4", &["ai-agents"], false))
        .await
        .unwrap();
    c.ping().await.unwrap();
    // A forged token.
    let addr = s.proxy.mysql.unwrap();
    let e = Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(addr.port())
            .user(Some("agent-4"))
            .pass(Some("eyJhbGciOiJFZERTQSJ9.e30.c2ln"))
            .db_name(Some("shop"))
            .enable_cleartext_plugin(true),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), 1045, "{e}");
    // A database no MySQL target serves.
    let e = Conn::new(
        s.opts("agent-4", &["ai-agents"], true)
            .db_name(Some("nothing")),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), 1049, "{e}");
}

/// Reads one MySQL packet from a raw socket: (sequence id, payload).
async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut h))
        .await
        .ok()?
        .ok()?;
    let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0; n];
    s.read_exact(&mut p).await.ok()?;
    Some((h[3], p))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    tollgate::protocol::mysql::packet::put(&mut out, seq, payload);
    out
}

/// A HandshakeResponse41 for the static-password target, cleartext plugin, no TLS.
fn login_response(user: &str, password: &str, db: &str) -> Vec<u8> {
    use tollgate::protocol::mysql::handshake::caps;
    let c = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::PLUGIN_AUTH_LENENC
        | caps::CONNECT_WITH_DB;
    let mut p = Vec::new();
    p.extend_from_slice(&c.to_le_bytes());
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    let mut pw = password.as_bytes().to_vec();
    pw.push(0);
    tollgate::protocol::mysql::wire::put_lenenc_bytes(&mut p, &pw);
    p.extend_from_slice(db.as_bytes());
    p.push(0);
    p.extend_from_slice(b"mysql_clear_password\0");
    p
}

#[tokio::test]
async fn malformed_packets_get_an_error_for_that_client_only() {
    let s = setup("raw").await;
    let addr = s.proxy.mysql.unwrap();
    let token = s.token("agent-5", &["ai-agents"]);
    // A login sent one byte at a time still works; then a command with a wrong sequence id,
    // an oversize length, and a truncated packet each end only their own connection.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (seq, hello) = read_packet(&mut raw).await.unwrap();
    assert_eq!((seq, hello[0]), (0, 10));
    for b in packet(1, &login_response("agent-5", &token, "shop")) {
        raw.write_all(&[b]).await.unwrap();
        raw.flush().await.unwrap();
    }
    let (_, ok) = read_packet(&mut raw).await.unwrap();
    assert_eq!(ok[0], 0x00, "logged in: {ok:?}");
    raw.write_all(&packet(3, b"\x03select 1")).await.unwrap();
    let (_, err) = read_packet(&mut raw).await.unwrap();
    assert_eq!(err[0], 0xFF);
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1156);
    assert!(read_packet(&mut raw).await.is_none(), "then closed");

    for bad in [
        vec![0xff, 0xff, 0xff, 0x00, 0x03], // 16 MiB announced, never sent
        vec![0x00, 0x00, 0x00, 0x00],       // an empty command
        [&[0x05, 0, 0, 0][..], b"\x16\x00"].concat(), // a command cut short, then EOF
    ] {
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        read_packet(&mut raw).await.unwrap();
        raw.write_all(&packet(1, &login_response("agent-5", &token, "shop")))
            .await
            .unwrap();
        let (_, ok) = read_packet(&mut raw).await.unwrap();
        assert_eq!(ok[0], 0x00);
        raw.write_all(&bad).await.unwrap();
        raw.shutdown().await.unwrap();
        // An ERR or a close, never a hang; the daemon keeps serving others.
        let _ = read_packet(&mut raw).await;
    }
    // An oversize announced length is refused before it is read.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    read_packet(&mut raw).await.unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0x01]).await.unwrap();
    let (_, err) = read_packet(&mut raw).await.unwrap_or_default();
    let _ = err;
    let mut c = s.agent("agent-5", &["ai-agents"]).await;
    let one: u32 = c.query_first("select 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "other connections are unaffected");
}

#[tokio::test]
async fn the_mariadb_cli_works_through_tollgate() {
    let s = setup("cli").await;
    let addr = s.proxy.mysql.unwrap();
    let token = s.token("agent-6", &["ai-agents"]);
    let out = tokio::process::Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", addr.port()),
            "-uagent-6",
            &format!("-p{token}"),
            "--ssl",
            "--skip-ssl-verify-server-cert",
            "--enable-cleartext-plugin",
            "shop",
            "-e",
            &format!(
                "select pan, note from {} order by id; select 'done'",
                s.table
            ),
        ])
        .output()
        .await
        .expect("the mariadb CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("411111******1111"), "{stdout}");
    assert!(stdout.contains("done"), "{stdout}");
    no_pan(&stdout, "the CLI's output");
    let out = tokio::process::Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", addr.port()),
            "-uagent-6",
            &format!("-p{token}"),
            "--ssl",
            "--skip-ssl-verify-server-cert",
            "shop",
            "-e",
            "drop table nothing",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("1227") && stderr.contains("no-schema-change"),
        "{stderr}"
    );
}

#[tokio::test]
async fn upstream_logins_native_and_ed25519_and_refusals() {
    let mut d = direct().await;
    // MariaDB's ed25519 plugin ships with the server; installing it twice is an error.
    let _ = d.query_drop("install soname 'auth_ed25519'").await;
    d.query_drop(
        "create or replace user 'tg_native'@'127.0.0.1' identified by 'native-pw';
         create or replace user 'tg_ed'@'127.0.0.1' identified via ed25519 using password('ed-pw');
         grant select on test.* to 'tg_native'@'127.0.0.1';
         grant select on test.* to 'tg_ed'@'127.0.0.1'",
    )
    .await
    .unwrap();
    drop(d);
    let s = setup_with(
        "logins",
        "  - name: native
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: tg_native
    password: { file: {dir}/native-pw }
  - name: ed
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: tg_ed
    password: { file: {dir}/ed-pw }
  - name: ed-not-allowed
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: tg_ed
    password: { file: {dir}/ed-pw }
    upstream_auth: [mysql_native_password]
  - name: wants-tls
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    tls: { mode: require }
",
    )
    .await;
    let dir = s.db.parent().unwrap();
    std::fs::write(dir.join("native-pw"), "native-pw\n").unwrap();
    std::fs::write(dir.join("ed-pw"), "ed-pw").unwrap();
    for (target, user) in [("native", "tg_native@127.0.0.1"), ("ed", "tg_ed@127.0.0.1")] {
        let mut c = Conn::new(
            s.opts("agent-7", &["ai-agents"], true)
                .db_name(Some(target)),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: {e}"));
        let who: String = c
            .query_first("select current_user()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(who, user);
        c.disconnect().await.unwrap();
    }
    // The server asks for ed25519, which this target does not allow; and a server without TLS
    // for a target that needs it. Both refused with a generic error (details in the log).
    for target in ["ed-not-allowed", "wants-tls"] {
        let e = Conn::new(
            s.opts("agent-7", &["ai-agents"], true)
                .db_name(Some(target)),
        )
        .await
        .unwrap_err();
        assert_eq!(code(&e), 1105, "{target}: {e}");
        assert!(message(&e).contains(target), "{e}");
    }
}

#[tokio::test]
async fn load_data_local_runs_only_where_the_policy_allows_it_and_the_file_is_not_recorded() {
    let s = setup("load").await;
    let table = format!("{}_load", s.table);
    let mut d = direct().await;
    d.query_drop(format!(
        "drop table if exists {table}; create table {table} (id int, pan varchar(40))"
    ))
    .await
    .unwrap();
    let file = s.db.parent().unwrap().join("cards.tsv");
    std::fs::write(&file, "1\t4111111111111111\n2\t5555555555554444\n").unwrap();
    let addr = s.proxy.mysql.unwrap();
    let sql = format!(
        "load data local infile '{}' into table {table}",
        file.display()
    );
    let load = async |sub: &str, groups: &[&str]| {
        let token = s.token(sub, groups);
        tokio::process::Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{}", addr.port()),
                &format!("-u{sub}"),
                &format!("-p{token}"),
                "--ssl",
                "--skip-ssl-verify-server-cert",
                "--local-infile=1",
                "shop",
                "-e",
                &sql,
            ])
            .output()
            .await
            .unwrap()
    };
    let out = load("agent-8", &["ai-agents"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1227"));
    let out = load("loader-1", &["loaders"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u64 = d
        .query_first(format!("select count(*) from {table}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2, "the file reached the server");
    let bytes = s.store_bytes().await;
    let found = tollgate::mask::pan::find_all(&bytes);
    assert!(
        found.is_empty(),
        "the file's card numbers were recorded: {found:?}"
    );
    assert!(String::from_utf8_lossy(&bytes).contains("local_infile_data"));
}

#[tokio::test]
async fn kill_query_cancels_a_statement_held_for_approval() {
    let s = setup("killheld").await;
    let mut c = s.agent("ho-1", &["held-ops"]).await;
    let id = c.id();
    let t = s.table.clone();
    let held = tokio::spawn(async move {
        let r = c
            .query_drop(format!("update {t} set note = 'never' where id = 2"))
            .await;
        (r, c)
    });
    let approver = s.token("dba-2", &["dba"]);
    s.first_pending(&approver).await;
    let mut k = s.agent("ho-1", &["held-ops"]).await;
    k.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    let (r, mut c) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held statement ends at once")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(code(&e), 1317, "{e}");
    assert!(
        s.pending(&approver).await.is_empty(),
        "the request was cancelled"
    );
    let one: u32 = c.query_first("select 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "the connection carries on");
}
