//! A leak corpus through tollgate to the machine's PostgreSQL: PANs of each brand in rows (text
//! and binary format), COPY output, errors, notices and notifications come back masked; near
//! misses come back untouched.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Proxy;
use futures_util::{TryStreamExt, future};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

/// Luhn-valid test numbers of each brand and length.
const PANS: &[(&str, &str)] = &[
    ("4111111111111111", "411111******1111"),
    ("4222222222222", "422222***2222"),
    ("4111111111111111110", "411111*********1110"),
    ("5555555555554444", "555555******4444"),
    ("2223000048400011", "222300******0011"),
    ("378282246310005", "378282*****0005"),
    ("6011111111111117", "601111******1117"),
    ("3530111333300000", "353011******0000"),
    ("30569309025904", "305693****5904"),
    ("6200000000000005", "620000******0005"),
    ("6759649826438453", "675964******8453"),
    ("501800000009", "501800**0009"),
];

fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn pans_in_rows_of_every_type_are_masked() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    for (pan, masked) in PANS {
        let sql = format!(
            "select '{pan}'::text, '{pan}'::varchar, 'card {pan} end', '{{\"pan\":\"{pan}\"}}'::json, \
             '{{\"pan\":{pan}}}'::jsonb, {pan}::numeric, ARRAY['{pan}'], ROW('{pan}', 1)"
        );
        let got = rows(&client.simple_query(&sql).await.unwrap());
        let row = &got[0];
        let text = row
            .iter()
            .map(|v| v.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" | ");
        assert!(!text.contains(pan), "{pan} leaked: {text}");
        assert_eq!(row[0].as_deref(), Some(*masked));
        assert_eq!(
            row[2].as_deref(),
            Some(format!("card {masked} end").as_str())
        );
        assert!(text.contains(masked), "{text}");
    }
    // PANs stored as bigint (16 digits fit): text format, still an integer (issue #17: a
    // driver parsing the column must not fail on asterisks).
    let got = rows(
        &client
            .simple_query("select 4111111111111111::int8")
            .await
            .unwrap(),
    );
    assert_eq!(got[0][0].as_deref(), Some("4111110000001111"));
    // Separators are kept.
    let got = rows(
        &client
            .simple_query("select '4111 1111 1111 1111', '5555-5555-5555-4444'")
            .await
            .unwrap(),
    );
    assert_eq!(got[0][0].as_deref(), Some("4111 11** **** 1111"));
    assert_eq!(got[0][1].as_deref(), Some("5555-55**-****-4444"));
}

#[tokio::test]
async fn near_misses_come_back_untouched() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    for value in [
        "1700000000000",
        "4111111111111112",
        // 20 digits whose first 16 are no PAN (a PAN followed by an expiry is one: issue #17).
        "41111111111111121111",
        "123e4567-e89b-12d3-a456-426614174000",
        "3.14159265358979",
        "order 7205759403792793",
    ] {
        let got = rows(
            &client
                .simple_query(&format!("select '{value}'"))
                .await
                .unwrap(),
        );
        assert_eq!(got[0][0].as_deref(), Some(value));
    }
}

#[tokio::test]
async fn binary_format_text_values_are_masked() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    // tokio-postgres asks for binary results: text and json travel as their bytes.
    let row = client
        .query_one(
            "select $1::text, $2::varchar, ('{\"pan\":\"' || $1 || '\"}')::jsonb::text",
            &[&"4111111111111111", &"5555555555554444"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "411111******1111");
    assert_eq!(row.get::<_, String>(1), "555555******4444");
    let json: String = row.get(2);
    assert_eq!(json, "{\"pan\": \"411111******1111\"}");
}

#[tokio::test]
async fn copy_output_in_all_three_formats_is_masked() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    client
        .batch_execute("create temp table cards (id int, pan text); insert into cards values (1, '4111111111111111'), (2, '378282246310005')")
        .await
        .unwrap();
    for format in ["text", "csv", "binary"] {
        let out: Vec<u8> = client
            .copy_out(&format!("copy cards to stdout (format {format})"))
            .await
            .unwrap()
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap()
            .concat();
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("4111111111111111") && !text.contains("378282246310005"),
            "{format}: {text}"
        );
        assert!(text.contains("411111******1111"), "{format}: {text}");
    }
}

#[tokio::test]
async fn errors_notices_and_notifications_are_masked() {
    let proxy = Proxy::start("").await;
    let (client, mut rx) = proxy.connect_with_messages().await;
    // A unique violation's DETAIL echoes the key.
    client
        .batch_execute(
            "create temp table u (pan text primary key); insert into u values ('4111111111111111')",
        )
        .await
        .unwrap();
    let err = client
        .batch_execute("insert into u values ('4111111111111111')")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23505");
    let detail = db.detail().unwrap_or_default();
    assert!(
        detail.contains("411111******1111") && !detail.contains("4111111111111111"),
        "{detail}"
    );
    // A cast error echoes the value in its message.
    let err = client
        .simple_query("select '4111111111111111x'::int8")
        .await
        .unwrap_err();
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(!message.contains("4111111111111111"), "{message}");
    // A NOTICE raised by a function.
    client
        .batch_execute("do $$ begin raise notice 'card %', '5555555555554444'; end $$")
        .await
        .unwrap();
    match rx.recv().await.unwrap() {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "card 555555******4444"),
        other => panic!("{other:?}"),
    }
    // A NOTIFY payload.
    client.batch_execute("listen cards").await.unwrap();
    let other = proxy.connect().await;
    other
        .batch_execute("notify cards, 'new 378282246310005'")
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
    {
        AsyncMessage::Notification(n) => assert_eq!(n.payload(), "new 378282*****0005"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn formats_by_group() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw").unwrap();
    let key = dir.path().join("hmac");
    std::fs::write(&key, "a masking key").unwrap();
    let yaml = format!(
        "
masking:
  format: last4
  hmac_key: {{ file: {key} }}
  groups:
    - groups: [break-glass]
      format: bin_last4
    - groups: [analytics]
      format: hmac
targets:
  - name: agents
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [ai-agents], password: {{ file: {pw} }} }}
  - name: oncall
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [break-glass], password: {{ file: {pw} }} }}
  - name: analysts
    address: 127.0.0.1:5432
    database: test
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [analytics], password: {{ file: {pw} }} }}
",
        key = key.display(),
        pw = pw.display()
    );
    let proxy = Proxy::start_yaml(dir, &yaml, tollgate::pipeline::Stages::default()).await;
    let query = |db: &'static str| {
        let url = format!(
            "host=127.0.0.1 port={} user=x password=pw dbname={db}",
            proxy.addr.port()
        );
        async move {
            let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(conn);
            rows(&c.simple_query("select '4111111111111111'").await.unwrap())[0][0]
                .clone()
                .unwrap()
        }
    };
    assert_eq!(query("agents").await, "************1111");
    assert_eq!(query("oncall").await, "411111******1111");
    let token = query("analysts").await;
    assert!(token.starts_with("pan_") && token.len() == 20, "{token}");
    assert_eq!(query("analysts").await, token, "tokens are stable");
}

#[tokio::test]
async fn function_call_results_are_masked() {
    let proxy = Proxy::start("").await;
    let mut raw = common::Raw::login(proxy.addr).await;
    // FunctionCall of btrim(text) (OID 885) with a PAN in text format.
    let pan = b"  4111111111111111  ";
    let mut body = 885i32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
    body.extend_from_slice(&(pan.len() as i32).to_be_bytes());
    body.extend_from_slice(pan);
    body.extend_from_slice(&[0, 0]);
    raw.send(&common::frame(b'F', &body)).await;
    let seen = raw.until_ready().await;
    assert_eq!(seen[0].0, b'V');
    assert_eq!(&seen[0].1[4..], b"411111******1111");
}

#[tokio::test]
async fn pans_stored_as_numbers_are_masked_in_binary_results() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    client
        .batch_execute("create temp table stored (id int, pan_big int8, pan_num numeric(19,0)); insert into stored values (1, 4111111111111111, 5555555555554444), (2, 42, 12.5)")
        .await
        .unwrap();
    // tokio-postgres prepares (Describe statement), then binds with binary results.
    let stmt = client
        .prepare("select pan_big, pan_num::text, pan_num from stored order by id")
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = client.query(&stmt, &[]).await.unwrap();
        let big: i64 = rows[0].get(0);
        assert_eq!(big, 4111110000001111, "bigint PAN masked, type kept");
        assert_eq!(rows[0].get::<_, String>(1), "555555******4444");
        assert_eq!(rows[1].get::<_, i64>(0), 42, "other numbers untouched");
        assert_eq!(rows[1].get::<_, String>(1), "13");
    }
    // A double holds 16 digits exactly: binary and text results.
    let row = client
        .query_one("select 4111111111111111::float8, 0.5::float8", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 4111110000001111.0);
    assert_eq!(row.get::<_, f64>(1), 0.5);
    let text = client
        .simple_query("select 4111111111111111::float8")
        .await
        .unwrap();
    assert_eq!(rows(&text)[0][0].as_deref(), Some("4111110000001111"));
    // Arrays of them, in binary, a NULL included (two dimensions: transform's unit tests).
    let row = client
        .query_one("select array[4111111111111111::int8, 42, null]", &[])
        .await
        .unwrap();
    let bigs: Vec<Option<i64>> = row.get(0);
    assert_eq!(bigs, [Some(4111110000001111), Some(42), None]);
    let text = client
        .query_one(
            "select array[5555555555554444::numeric, 7]::text, array[4111111111111111::int8]",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(text.get::<_, String>(0), "{555555******4444,7}");
    assert_eq!(text.get::<_, Vec<i64>>(1), [4111110000001111]);
    // Pipelined with an error in the middle: tracking stays in step.
    let results = future::join_all((0..6).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            if i == 3 {
                client.query("select 1/0", &[]).await.map(|_| 0)
            } else {
                client.query(stmt, &[]).await.map(|r| r[0].get::<_, i64>(0))
            }
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        match i {
            3 => assert!(r.is_err()),
            _ => assert_eq!(r.unwrap(), 4111110000001111),
        }
    }
}

/// Column rules: values of named columns are masked whatever they hold (a number failing Luhn
/// included), through aliases, in binary results and prepared statements; an undecodable
/// binary value there becomes NULL.
#[tokio::test]
async fn column_rules_mask_named_columns_whatever_they_hold() {
    let proxy = Proxy::start(
        "masking:\n  columns: [\"pan*\", \"*card_number*\", public.tollgate_legacy_cards.cc]\n",
    )
    .await;
    let client = proxy.connect().await;
    // Real tables (the lookup sees them from its own connection), dropped at the end.
    let suffix = std::process::id();
    let cards = format!("tollgate_colrule_{suffix}");
    client
        .batch_execute(&format!(
            "drop table if exists {cards}; drop table if exists tollgate_legacy_cards;
             create table {cards} (id int, pan text, note text, n bigint, raw bytea);
             insert into {cards} values (1, '4111111111111112', '4111111111111112', 4111111111111112, '\\x0102');
             create table tollgate_legacy_cards (cc text, other text);
             insert into tollgate_legacy_cards values ('5555 5555 5555 4445', '5555 5555 5555 4445');"
        ))
        .await
        .unwrap();
    let text = |r: Vec<SimpleQueryMessage>| -> Vec<Vec<Option<String>>> { rows(&r) };
    // By source column: direct, aliased; the note column (no rule) keeps a Luhn-failing number.
    let r = text(
        client
            .simple_query(&format!("select pan, pan as x, note from {cards}"))
            .await
            .unwrap(),
    );
    assert_eq!(
        r,
        [[
            Some("411111******1112".into()),
            Some("411111******1112".into()),
            Some("4111111111111112".into())
        ]]
    );
    // By output name.
    let r = text(
        client
            .simple_query("select '4111111111111112' as old_card_number")
            .await
            .unwrap(),
    );
    assert_eq!(r, [[Some("411111******1112".into())]]);
    // By schema.table.column, separators kept; the other column untouched.
    let r = text(
        client
            .simple_query("select cc, other from tollgate_legacy_cards")
            .await
            .unwrap(),
    );
    assert_eq!(
        r,
        [[
            Some("5555 55** **** 4445".into()),
            Some("5555 5555 5555 4445".into())
        ]]
    );
    // Binary results through a prepared statement: text masked, bigint masked in place, and
    // a bytea the masker cannot read in a masked column comes back NULL.
    let stmt = client
        .prepare(&format!(
            "select pan, n as pan_number, raw as pan_raw from {cards} where id = $1"
        ))
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "411111******1112");
    assert_eq!(row.get::<_, i64>(1), 4111110000001112);
    assert_eq!(row.get::<_, Option<Vec<u8>>>(2), None);
    client
        .batch_execute(&format!(
            "drop table {cards}; drop table tollgate_legacy_cards"
        ))
        .await
        .unwrap();
}
