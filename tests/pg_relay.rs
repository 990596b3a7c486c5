//! tokio-postgres through tollgate to the machine's PostgreSQL: both query protocols, binary
//! formats, pipelining, COPY both ways, notices and notifications, cancel, errors mid-pipeline,
//! and refused statements.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proxy, sqlstate};
use futures_util::{SinkExt, StreamExt, TryStreamExt, future};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};
use tollgate::pipeline::{ConnInfo, ConnInspect, Inspect, Ruling, Stages, Statement, Verdict};

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

fn rows_of(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_and_multi_statement_queries() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    let out = client
        .simple_query("select 1; select 'two'; select null::text")
        .await
        .unwrap();
    assert_eq!(rows_of(&out), ["1", "two", "NULL"]);
    // The server's identity, not the agent's, is what upstream sees.
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
}

#[tokio::test]
async fn extended_protocol_with_binary_values() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    // tokio-postgres sends parameters and receives results in binary format.
    let row = client
        .query_one(
            "select $1::int8 + 1, $2::text || '!', $3::bytea, $4::float8, $5::bool",
            &[&41i64, &"hi", &vec![0u8, 255, 7], &1.5f64, &true],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0, 255, 7]);
    assert_eq!(row.get::<_, f64>(3), 1.5);
    assert!(row.get::<_, bool>(4));

    // A named prepared statement used many times, then portals with a row limit.
    let stmt = client
        .prepare("select g from generate_series(1, $1) g")
        .await
        .unwrap();
    for n in [1i32, 10, 1000] {
        let rows = client.query(&stmt, &[&n]).await.unwrap();
        assert_eq!(rows.len(), n as usize);
    }
    let mut tx_client = proxy.connect().await;
    let stmt = tx_client
        .prepare("select g from generate_series(1, $1) g")
        .await
        .unwrap();
    let tx = tx_client.transaction().await.unwrap();
    let portal = tx.bind(&stmt, &[&25i32]).await.unwrap();
    let mut total = 0;
    loop {
        let batch = tx.query_portal(&portal, 10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        total += batch.len();
    }
    assert_eq!(total, 25);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn pipelined_queries_and_an_error_in_the_middle() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    // tokio-postgres pipelines concurrent queries on one connection.
    let queries = (0..50i32).map(|i| {
        let client = &client;
        async move {
            if i == 25 {
                client.query_one("select 1/0", &[]).await.map(|_| -1)
            } else {
                client
                    .query_one("select $1::int4 * 2", &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            }
        }
    });
    let results = future::join_all(queries).await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, i as i32 * 2),
            Err(e) => {
                assert_eq!(i, 25);
                assert_eq!(sqlstate(&e), "22012");
            }
        }
    }
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[tokio::test]
async fn copy_in_and_out_in_text_csv_and_binary() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    client
        .batch_execute("create temp table t (id int, name text)")
        .await
        .unwrap();

    let sink = client.copy_in("copy t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..1000 {
        sink.send(Bytes::from(format!("{i}\tname {i}\n")))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1000);

    let sink = client
        .copy_in("copy t from stdin (format csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1000,\"quoted, name\"\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);

    let text: Vec<Bytes> = client
        .copy_out("copy (select * from t order by id) to stdout")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: Vec<u8> = text.concat();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), 1001);
    assert!(text.starts_with("0\tname 0\n"));

    let csv: Vec<Bytes> = client
        .copy_out("copy (select * from t where id = 1000) to stdout (format csv)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(csv.concat(), b"1000,\"quoted, name\"\n");

    // Binary COPY out, then back in through tollgate: same rows.
    let binary: Vec<u8> = client
        .copy_out("copy t to stdout (format binary)")
        .await
        .unwrap()
        .try_collect::<Vec<Bytes>>()
        .await
        .unwrap()
        .concat();
    assert!(binary.starts_with(b"PGCOPY\n\xff\r\n\0"));
    client
        .batch_execute("create temp table t2 (id int, name text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("copy t2 from stdin (format binary)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(binary)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1001);

    // A COPY the client aborts leaves the connection usable.
    let sink = client
        .copy_in::<_, Bytes>("copy t from stdin")
        .await
        .unwrap();
    drop(sink);
    assert_eq!(
        client
            .query_one("select count(*) from t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1001
    );
}

#[tokio::test]
async fn notices_and_notifications_reach_the_client() {
    let proxy = Proxy::start("").await;
    let (client, mut rx) = proxy.connect_with_messages().await;
    client
        .batch_execute("do $$ begin raise notice 'hello from plpgsql'; end $$")
        .await
        .unwrap();
    match rx.recv().await.unwrap() {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
    client.batch_execute("listen tg_channel").await.unwrap();
    let other = proxy.connect().await;
    other
        .batch_execute("notify tg_channel, 'payload 42'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        AsyncMessage::Notification(n) => {
            assert_eq!(n.channel(), "tg_channel");
            assert_eq!(n.payload(), "payload 42");
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_reaches_the_right_backend_within_a_second() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    let bystander = proxy.connect().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("select pg_sleep(30)").await;
        (r.map(|_| ()), client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = sleeper.await.unwrap();
    let err = result.expect_err("the sleep was cancelled");
    assert_eq!(sqlstate(&err), "57014");
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    // Both connections go on working; the bystander was not cancelled.
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        bystander
            .query_one("select 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn cancel_with_a_wrong_secret_does_nothing() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    // A key tollgate never handed out.
    let mut raw = common::Raw::connect(proxy.addr).await;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&1i32.to_be_bytes());
    packet.extend_from_slice(&2i32.to_be_bytes());
    raw.send(&packet).await;
    assert!(raw.read().await.is_none(), "tollgate closes without a word");
    let r = client.simple_query("select pg_sleep(0.5)").await;
    assert!(r.is_ok());
}

/// Refuses statements that mention a marker word, as the policy stage will.
struct RefuseMarked;

impl Inspect for RefuseMarked {
    fn connect(&self, _conn: &ConnInfo) -> Box<dyn ConnInspect> {
        Box::new(RefuseMarked)
    }
}

impl ConnInspect for RefuseMarked {
    fn inspect(&mut self, _conn: &ConnInfo, statement: &Statement<'_>) -> Ruling {
        let mut ruling = Ruling::forward_all();
        if statement.sql.contains("forbidden_word") {
            ruling.verdict = Verdict::Refuse {
                sqlstate: "42501".into(),
                message: "tollgate: blocked by rule test: marked statement".into(),
            };
        }
        ruling
    }
}

fn refusing() -> Stages {
    Stages {
        inspect: Arc::new(RefuseMarked),
        record: None,
        approvals: None,
    }
}

#[tokio::test]
async fn refused_statement_keeps_the_connection_and_transaction_semantics() {
    let proxy = Proxy::start_with("", "", refusing()).await;
    let client = proxy.connect().await;

    // Simple protocol, outside a transaction: an error, then business as usual.
    let err = client
        .simple_query("select 'forbidden_word'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(
        message(&err),
        "tollgate: blocked by rule test: marked statement"
    );
    assert_eq!(
        rows_of(&client.simple_query("select 5").await.unwrap()),
        ["5"]
    );

    // Inside a transaction the block aborts it, exactly like any failed statement.
    client
        .batch_execute("begin; create temp table kept (x int)")
        .await
        .unwrap();
    let err = client
        .batch_execute("select 'forbidden_word'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(
        rows_of(&client.simple_query("select 6").await.unwrap()),
        ["6"]
    );

    // Extended protocol: refused at Parse, in the middle of a pipeline.
    let results = future::join_all((0..9).map(|i| {
        let client = &client;
        async move {
            let sql = if i == 4 {
                "select 'forbidden_word'::text"
            } else {
                "select $1::text"
            };
            if i == 4 {
                client
                    .query_one(sql, &[])
                    .await
                    .map(|r| r.get::<_, String>(0))
            } else {
                let v = i.to_string();
                client
                    .query_one(sql, &[&v])
                    .await
                    .map(|r| r.get::<_, String>(0))
            }
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        if i == 4 {
            let e = r.unwrap_err();
            assert_eq!(sqlstate(&e), "42501");
            assert!(message(&e).contains("marked statement"));
        } else {
            assert_eq!(r.unwrap(), i.to_string());
        }
    }
    // The marker tollgate substitutes never reaches the client: its error was swapped.
    let e = client
        .prepare("select 1 where 'forbidden_word' = ''")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(!message(&e).contains("tollgate_refused"), "{e}");
    assert_eq!(
        client
            .query_one("select 9", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        9
    );
}

#[tokio::test]
async fn large_results_stream_through() {
    let proxy = Proxy::start("").await;
    let client = proxy.connect().await;
    let stream = client
        .query_raw(
            "select g, repeat('x', 100) from generate_series(1, 200000) g",
            Vec::<i32>::new(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut n = 0i64;
    let mut sum = 0i64;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        sum += row.get::<_, i32>(0) as i64;
        n += 1;
    }
    assert_eq!(n, 200_000);
    assert_eq!(sum, 200_000 * 200_001 / 2);
    // A value larger than the read buffer.
    let big = client
        .query_one("select repeat('y', 3000000)", &[])
        .await
        .unwrap();
    assert_eq!(big.get::<_, String>(0).len(), 3_000_000);
}
