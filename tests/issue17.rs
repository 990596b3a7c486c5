//! Issue #17, every failing input as a test against the machine's PostgreSQL and MariaDB: a
//! card number in any spelling, encoding or result shape reaches neither the agent, nor the
//! audit store, nor the log (which is captured here at debug level through tollgate's own
//! log sink).

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Proxy, Raw, frame};
use mysql_async::prelude::*;
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::mask::pan;
use tollgate::pipeline::Stages;

const PAN: &str = "4111111111111111";

/// Every spelling of [`PAN`] the issue names, and more.
const SPELLINGS: &[&str] = &[
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "4111 1111-1111 1111",
    "４１１１１１１１１１１１１１１１",
    "4111\u{200b}1111\u{200b}1111\u{200b}1111",
    "41111111111111111225",
    "4111 - 1111 - 1111 - 1111",
    "4111\u{a0}1111\u{2013}1111\u{ad}1111",
    "𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏",
    "card: 4,111,111,111,111,111.00 due",
    "{\"pan\": \"\\u0034111111111111111\"}",
    "4111%201111%201111%201111",
    "0004111111111111111",
];

/// The log, captured through tollgate's sink at debug level for the whole test binary.
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let writer = move || Capture(Arc::clone(&sink));
        tollgate::logging::subscriber(Some("debug"), false, writer)
            .try_init()
            .expect("the test binary's only subscriber");
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No clear card number in `bytes`, in any spelling: the detector finds none, and the folded
/// digits do not hold the PANs used here.
fn assert_no_pan(bytes: &[u8], place: &str) {
    let found = pan::find_all(bytes);
    if let Some(f) = found.first() {
        let from = f.range.start.saturating_sub(80);
        let to = (f.range.end + 80).min(bytes.len());
        panic!(
            "clear PAN in {place}: …{}…",
            String::from_utf8_lossy(&bytes[from..to])
        );
    }
    let digits = pan::folded_digits(bytes);
    for p in [PAN, "5555555555554444", "378282246310005"] {
        assert!(!digits.contains(p), "{p} in the folded digits of {place}");
    }
}

struct Setup {
    proxy: Proxy,
    recorder: Recorder,
    db: std::path::PathBuf,
}

async fn setup() -> Setup {
    setup_with_policy(false).await
}

/// With `policy`: a policy that allows everything is in force (promotions are enforced under a
/// policy).
async fn setup_with_policy(policy: bool) -> Setup {
    log();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (signer, key_file) = common::signing_key(dir.path());
    let recorder = Recorder::start(
        Settings {
            queue_size: 8192,
            ..common::recorder_settings(Location::Sqlite(db.clone()), "i17")
        },
        signer,
    )
    .unwrap();
    let mut stages = Stages {
        record: Some(recorder.clone()),
        ..Stages::default()
    };
    if policy {
        let file = dir.path().join("policy.yaml");
        std::fs::write(
            &file,
            "default: allow\nrules:\n  - id: reads\n    match: { kinds: [read] }\n    action: allow\n",
        )
        .unwrap();
        let inspector = tollgate::conn::policy_files::PolicyInspector::load(
            vec![file],
            tollgate::policy::classify::SqlDialect::Postgres,
        )
        .unwrap();
        stages.inspect = Arc::new(tollgate::policy::inspect::PolicyStage(Arc::new(inspector)));
    }
    let pw = dir.path().join("agent-password");
    let yaml = format!(
        "
audit:
  sqlite: {db}
  signing_key: {{ file: {key} }}
  results: full
{targets}
  - name: shop17
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {pw} }} }}
",
        targets = common::targets(dir.path()),
        pw = pw.display(),
        db = db.display(),
        key = key_file.display()
    );
    let proxy = Proxy::start_mysql(dir, &yaml, stages).await;
    Setup {
        proxy,
        recorder,
        db,
    }
}

impl Setup {
    async fn store_bytes(&self) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.recorder.flush().await.unwrap();
        common::audit_store_bytes(&self.db).await
    }

    /// Every record body of the store.
    async fn bodies(&self) -> Vec<String> {
        self.recorder.flush().await.unwrap();
        let mut store = tollgate::audit::Store::open(&Location::Sqlite(self.db.clone()), false)
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = store.page("i17", after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page.into_iter().map(|r| r.body));
        }
        store.close().await;
        out
    }

    fn mysql(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.proxy.mysql.unwrap().port())
            .user(Some("agent"))
            .pass(Some(common::AGENT_PASSWORD))
            .db_name(Some("shop17"))
            .prefer_socket(false)
            .enable_cleartext_plugin(true)
    }
}

async fn direct_pg() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

async fn direct_mysql() -> mysql_async::Conn {
    mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some("root"))
            .db_name(Some("test")),
    )
    .await
    .unwrap()
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = format!("{name}\0{sql}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind `statement` to the unnamed portal, every result column in binary.
fn bind_binary(statement: &str) -> Vec<u8> {
    let mut b = format!("\0{statement}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    frame(b'B', &b)
}

fn execute() -> Vec<u8> {
    let mut b = b"\0".to_vec();
    b.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &b)
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// The first value of each DataRow (`None` for NULL).
fn first_values(messages: &[(u8, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
    messages
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| {
            let len = i32::from_be_bytes(b[2..6].try_into().unwrap());
            (len >= 0).then(|| b[6..6 + len as usize].to_vec())
        })
        .collect()
}

/// Item 1: the extended protocol without Describe, statement names reused, types tollgate
/// does not decode: binary values are masked as their type or withheld, never in clear.
#[tokio::test]
async fn binary_results_fail_closed_whatever_the_client_skips() {
    let s = setup().await;
    let direct = direct_pg().await;
    direct
        .batch_execute(&format!(
            "drop table if exists cards17; create table cards17 (id int, pan_num bigint, note text);
             insert into cards17 values (1, {PAN}, 'card {PAN}');
             drop type if exists t17 cascade; create type t17 as (a bigint, b text);"
        ))
        .await
        .unwrap();
    let mut raw = Raw::login(s.proxy.addr).await;

    // Parse, Bind (binary results), Execute, Sync: no Describe.
    let sql = "SELECT pan_num FROM cards17 WHERE id = 1";
    let mut batch = parse("", sql);
    batch.extend(bind_binary(""));
    batch.extend(execute());
    batch.extend(sync());
    raw.send(&batch).await;
    let got = raw.until_ready().await;
    let tags: Vec<u8> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"12DC", "tollgate's own Describe stays invisible");
    let v = first_values(&got)[0].clone().unwrap();
    assert_eq!(i64::from_be_bytes(v.try_into().unwrap()), 4111110000001111);

    // A statement name described as text, then closed and parsed again as the bigint.
    let mut batch = parse("s1", "select 'x'::text");
    batch.extend(frame(b'D', b"Ss1\0"));
    batch.extend(sync());
    raw.send(&batch).await;
    raw.until_ready().await;
    let mut batch = frame(b'C', b"Ss1\0");
    batch.extend(parse("s1", sql));
    batch.extend(bind_binary("s1"));
    batch.extend(execute());
    batch.extend(sync());
    raw.send(&batch).await;
    let v = first_values(&raw.until_ready().await)[0].clone().unwrap();
    assert_eq!(i64::from_be_bytes(v.try_into().unwrap()), 4111110000001111);

    // Types: a point (withheld); a user-defined composite (read from pg_type), a record, a
    // range, money, float4, an array of records: decoded and masked.
    for (sql, expect) in [
        (format!("select row({PAN}, 'x')::t17"), "masked"),
        (format!("select point({PAN}, 1)"), "null"),
        (format!("select row({PAN}::int8, 'card {PAN}')"), "masked"),
        (format!("select int8range({PAN}, {PAN} + 10)"), "masked"),
        (format!("select {PAN}::bigint::money / 100"), "masked"),
        (format!("select array[row({PAN}::int8)]"), "masked"),
        (format!("select '{{{PAN}}}'::text[]"), "masked"),
        (format!("select '{{\"{PAN}\": 1}}'::jsonb"), "masked"),
    ] {
        let mut batch = parse("", &sql);
        batch.extend(bind_binary(""));
        batch.extend(execute());
        batch.extend(sync());
        raw.send(&batch).await;
        let got = raw.until_ready().await;
        assert!(got.iter().all(|(t, _)| *t != b'E'), "{sql}: {got:?}");
        let v = first_values(&got)[0].clone();
        match expect {
            "null" => assert_eq!(v, None, "{sql}"),
            _ => {
                let v = v.unwrap_or_else(|| panic!("{sql}: withheld"));
                assert_no_pan(&v, &sql);
                assert!(
                    !v.windows(8).any(|w| w == 4111111111111111i64.to_be_bytes()),
                    "{sql}: the PAN as a binary int8 in {v:?}"
                );
            }
        }
    }
    drop(raw);
    direct
        .batch_execute("drop table cards17; drop type t17")
        .await
        .unwrap();
}

/// Items 2 and 10: psql text results of every spelling, NOTIFY payloads: masked toward the
/// agent and in the audit store's records.
#[tokio::test]
async fn every_spelling_is_masked_for_the_agent_and_in_the_store() {
    let s = setup().await;
    let direct = direct_pg().await;
    direct
        .batch_execute("drop table if exists notes17; create table notes17 (id int, note text)")
        .await
        .unwrap();
    for (i, note) in SPELLINGS.iter().enumerate() {
        direct
            .execute(
                "insert into notes17 values ($1, $2)",
                &[&(i as i32), &note.to_string()],
            )
            .await
            .unwrap();
    }
    let out = tokio::process::Command::new("psql")
        .args([
            s.proxy.url("test").as_str(),
            "-At",
            "-c",
            "select note from notes17 order by id",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), SPELLINGS.len());
    for (line, spelling) in lines.iter().zip(SPELLINGS) {
        assert_no_pan(line.as_bytes(), &format!("psql's output for {spelling:?}"));
        // The format's promise in the original spelling: the BIN and the last four show.
        let digits = pan::folded_digits(line.as_bytes());
        assert!(digits.contains("411111"), "{spelling:?} -> {line:?}");
    }
    // NOTIFY: the agent's notification and the store's record of it.
    let (client, mut messages) = s.proxy.connect_with_messages().await;
    client.batch_execute("listen cards17").await.unwrap();
    client
        .batch_execute(&format!("notify cards17, 'new card {PAN}'"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(tokio_postgres::AsyncMessage::Notification(n)) = messages.recv().await {
                return n.payload().to_owned();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, "new card 411111******1111");
    drop(client);
    let bodies = s.bodies().await;
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"payload\":\"new card 411111******1111\"")),
        "the notification is recorded, masked"
    );
    assert_no_pan(&s.store_bytes().await, "the audit store");
    direct.batch_execute("drop table notes17").await.unwrap();
}

/// Items 3 and 4: a card number as a table name (both protocols) and as a column name.
#[tokio::test]
async fn card_numbers_in_names_are_masked_in_errors_columns_and_records() {
    let s = setup().await;
    let client = s.proxy.connect().await;
    let e = client
        .simple_query(&format!("SELECT * FROM \"{PAN}\""))
        .await
        .unwrap_err();
    assert_no_pan(e.to_string().as_bytes(), "the PostgreSQL error");
    let stmt = client
        .prepare(&format!("SELECT 1 AS \"{PAN}\""))
        .await
        .unwrap();
    assert_eq!(stmt.columns()[0].name(), "411111******1111");
    let rows = client
        .simple_query(&format!("SELECT 1 AS \"{PAN}\""))
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("{rows:?}")
    };
    assert_eq!(row.columns()[0].name(), "411111******1111");

    let mut my = mysql_async::Conn::new(s.mysql()).await.unwrap();
    let e = my
        .query_drop(format!("SELECT * FROM `{PAN}`"))
        .await
        .unwrap_err();
    assert_no_pan(e.to_string().as_bytes(), "the MySQL error");
    drop(my);
    let bodies = s.bodies().await;
    let tables: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("\"type\":\"statement\"") && b.contains("411111******1111"))
        .collect();
    assert!(
        tables.len() >= 2,
        "statement records name the table masked: {tables:?}"
    );
    assert_no_pan(&s.store_bytes().await, "the audit store");
}

/// Item 6: binary numerics far longer than any card number cost bounded work.
#[tokio::test]
async fn huge_binary_numerics_cost_bounded_work() {
    let s = setup().await;
    let mut raw = Raw::login(s.proxy.addr).await;
    let mut batch = parse("", "select 1e131071::numeric from generate_series(1, 2000)");
    batch.extend(bind_binary(""));
    batch.extend(execute());
    batch.extend(sync());
    let t0 = Instant::now();
    raw.send(&batch).await;
    let got = raw.until_ready().await;
    let took = t0.elapsed();
    let values = first_values(&got);
    assert_eq!(values.len(), 2000);
    // ndigits 1, weight 32767: the value as the server sent it.
    assert_eq!(values[0].as_ref().unwrap()[..4], [0, 1, 0x7f, 0xff]);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// Item 9: a masked number still parses as its column's type in text results.
#[tokio::test]
async fn masked_numbers_in_text_results_still_parse() {
    let s = setup().await;
    let client = s.proxy.connect().await;
    let rows = client
        .simple_query(&format!(
            "select {PAN}::int8, {PAN}.25::numeric, '6200000000000005'::int8"
        ))
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("{rows:?}")
    };
    let int: i64 = row.get(0).unwrap().parse().unwrap();
    assert_eq!(int, 4111110000001111);
    assert_eq!(row.get(1), Some("4111110000001111.25"));
    // Hidden digits that were zeros: the value shown is not the card number.
    let zeros: i64 = row.get(2).unwrap().parse().unwrap();
    assert_ne!(zeros, 6200000000000005);
    assert!(!pan::is_pan(zeros.to_string().as_bytes()));
}

/// Item 8: MySQL BIT(64) holding a card number, text and binary protocol.
#[tokio::test]
async fn mysql_bit_columns_are_masked_as_numbers() {
    let s = setup().await;
    let mut d = direct_mysql().await;
    d.query_drop(format!(
        "drop table if exists bits17; create table bits17 (id int, b bit(64), g geometry);
         insert into bits17 values (1, {PAN}, ST_GeomFromText('POINT({PAN} 1)'))"
    ))
    .await
    .unwrap();
    let mut my = mysql_async::Conn::new(s.mysql()).await.unwrap();
    let bits = |v: &mysql_async::Value| match v {
        mysql_async::Value::Bytes(b) => b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        other => panic!("{other:?}"),
    };
    let row: mysql_async::Row = my
        .query_first("select b, g from bits17")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bits(&row.as_ref(0).unwrap().clone()), 4111110000001111);
    let geometry = match row.as_ref(1).unwrap() {
        mysql_async::Value::Bytes(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        !geometry
            .windows(8)
            .any(|w| w == 4111111111111111f64.to_le_bytes()),
        "the point's x in clear"
    );
    let row: mysql_async::Row = my
        .exec_first("select b from bits17 where id = ?", (1,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bits(&row.as_ref(0).unwrap().clone()), 4111110000001111);
    drop(my);
    d.query_drop("drop table bits17").await.unwrap();
}

/// Items 2, 3 and 5 on both protocols: a PAN-heavy session, then the audit store and the
/// debug-level log scanned for any clear PAN in any spelling.
#[tokio::test]
async fn after_a_pan_heavy_session_the_store_and_the_debug_log_are_clean() {
    let s = setup().await;
    let log = log();
    let client = s.proxy.connect().await;
    for spelling in SPELLINGS {
        let escaped = spelling.replace('\'', "''");
        client
            .simple_query(&format!(
                "select '{escaped}' as note, '{escaped}'::text || ''"
            ))
            .await
            .unwrap();
        let _ = client
            .simple_query(&format!("select * from \"{escaped}\""))
            .await;
        let _ = client.simple_query(&format!("select {escaped}")).await;
    }
    // A login whose user name is a card number.
    let mut raw = Raw::connect(s.proxy.addr).await;
    raw.send(&common::startup_packet(&[
        ("user", PAN),
        ("database", "plain"),
    ]))
    .await;
    let _ = raw.read().await;
    raw.send(&frame(b'p', b"wrong\0")).await;
    let _ = raw.read().await;

    let mut my = mysql_async::Conn::new(s.mysql()).await.unwrap();
    for spelling in SPELLINGS {
        let escaped = spelling.replace('\\', "\\\\").replace('\'', "\\'");
        let _: Vec<mysql_async::Row> = my
            .query(format!("select '{escaped}' as note"))
            .await
            .unwrap();
        let _ = my.query_drop(format!("select * from `{escaped}`")).await;
    }
    drop(my);
    drop(client);
    assert_no_pan(&s.store_bytes().await, "the audit store");
    let logged = log.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logged).contains("DEBUG"),
        "tollgate's own debug lines are there"
    );
    assert!(
        !String::from_utf8_lossy(&logged).contains(" sqlparser"),
        "the SQL parser's debug lines are capped"
    );
    assert_no_pan(&logged, "the debug log");
}

/// Item 7: a free-text column found to hold a card number is promoted for its target:
/// reading it whole stays allowed (masked), computing over it is refused, on every connection.
#[tokio::test]
async fn a_column_found_to_hold_card_numbers_is_refused_to_computation() {
    let s = setup_with_policy(true).await;
    let direct = direct_pg().await;
    direct
        .batch_execute(
            "drop table if exists memo17; create table memo17 (id int, remark text, other text);
             insert into memo17 values (1, 'paid with 4111 1111 1111 1111 today', 'nothing here')",
        )
        .await
        .unwrap();
    let client = s.proxy.connect().await;
    // Before any card number was seen in it, computing over the column is allowed.
    client
        .simple_query("select substr(other, 1, 3) from memo17")
        .await
        .unwrap();
    let rows = client
        .simple_query("select remark from memo17")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("{rows:?}")
    };
    assert_eq!(row.get(0), Some("paid with 4111 11** **** 1111 today"));
    for sql in [
        "select substr(remark, 11, 8) from memo17 union all select substr(remark, 19, 8) from memo17",
        "select translate(remark, '0123456789', 'abcdefghij') from memo17",
        "select id from memo17 where remark like '%4111 1111%'",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(common::sqlstate(&e), "42501", "{sql}: {e}");
    }
    // Another column of the same table, and another connection of the same target.
    client
        .simple_query("select upper(other) from memo17")
        .await
        .unwrap();
    let other = s.proxy.connect().await;
    let e = other
        .simple_query("select left(remark, 12) from memo17")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    drop((client, other));
    let bodies = s.bodies().await;
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"type\":\"column_promoted\"")
                && b.contains("public.memo17.remark")),
        "the promotion is recorded"
    );
    direct.batch_execute("drop table memo17").await.unwrap();
}

/// Item 7: `tollgate discover` samples a target and reports the free-text column that holds
/// card numbers (and not the one that holds none), writing a column rule for it.
#[tokio::test]
async fn discover_finds_card_number_columns_by_sampling() {
    let direct = direct_pg().await;
    direct
        .batch_execute(
            "drop schema if exists disc17 cascade; create schema disc17;
             create table disc17.tickets (id int, note text, remark text, amount numeric);
             insert into disc17.tickets
               select g, case when g % 10 = 0 then 'customer card 4111 1111 1111 1111 ok' else 'no card' end,
                      'called on 2024-03-05 12:30:45.123456, order 1700000000000', g * 1.5
               from generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(dir.path().join("pw"), "x\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "targets:
  - name: disc17
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: password, user: agent, password: {{ file: {} }} }}
",
            dir.path().join("pw").display()
        ),
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["discover", "--config"])
        .arg(&config)
        .args(["--target", "disc17", "--sample", "100", "--write"])
        .arg(&rules)
        .env("TOLLGATE_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |column: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{column}\t")))
            .unwrap_or_else(|| panic!("{column} not reported: {stdout}"))
            .to_owned()
    };
    assert!(
        line("disc17.tickets.note")
            .contains("10 of 100 sampled values hold a card number\tPROTECT")
    );
    assert!(line("disc17.tickets.remark").contains("0 of 100"));
    assert!(!line("disc17.tickets.remark").contains("PROTECT"));
    assert_no_pan(stdout.as_bytes(), "discover's report");
    let written = std::fs::read_to_string(&rules).unwrap();
    assert!(written.contains("    - disc17.tickets.note\n"), "{written}");
    assert!(!written.contains("disc17.tickets.remark"), "{written}");
    direct
        .batch_execute("drop schema disc17 cascade")
        .await
        .unwrap();
}

/// Binary COPY announces no column types: a bigint card number in it is masked as a number.
#[tokio::test]
async fn binary_copy_of_numbers_is_masked() {
    use futures_util::TryStreamExt;
    let s = setup().await;
    let client = s.proxy.connect().await;
    client
        .batch_execute(&format!(
            "create temp table c17 (n bigint, f float8, d numeric, t text);
             insert into c17 values ({PAN}, {PAN}, {PAN}, 'x {PAN}')"
        ))
        .await
        .unwrap();
    let out: Vec<u8> = client
        .copy_out("copy c17 to stdout (format binary)")
        .await
        .unwrap()
        .try_collect::<Vec<bytes::Bytes>>()
        .await
        .unwrap()
        .concat();
    assert!(out.starts_with(b"PGCOPY\n\xff\r\n\0"), "{out:?}");
    assert!(
        !out.windows(8)
            .any(|w| w == 4111111111111111i64.to_be_bytes()
                || w == 4111111111111111f64.to_be_bytes()),
        "{out:?}"
    );
    // numeric 4111111111111111: groups 4111 1111 1111 1111.
    assert!(
        !out.windows(8)
            .any(|w| w == [0x10, 0x0f, 0x04, 0x57, 0x04, 0x57, 0x04, 0x57])
    );
    assert_no_pan(&out, "binary COPY");
}
