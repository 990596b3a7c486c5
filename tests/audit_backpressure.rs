//! Issue #18: the record stage's queue is bounded in bytes, and a writer that falls behind
//! slows the relay down instead of making it buffer. The store here is the machine's
//! PostgreSQL (127.0.0.1:5432) with its records table held locked by another session, so the
//! writer's INSERT waits (a store that is slow, not failing). Then:
//! - a 2,000,000-row SELECT waits for room up to `queue_wait` and ends with FATAL 58030, while
//!   the queue's bytes and the process's memory stay bounded (the old queue, bounded in
//!   records only, buffered hundreds of megabytes of result rows);
//! - a statement waits up to `queue_wait`, then is refused with 58030 and the connection stays
//!   usable;
//! - once the store moves again, everything accepted is written and the chain verifies.
//!
//! The same on the MySQL wire (MariaDB 127.0.0.1:3306), with ERR 1105 for the refusals.

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use tollgate::audit::record::PublicKey;
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Store, verify};
use tollgate::pipeline::Stages;

const QUEUE_BYTES: usize = 256 * 1024;
const QUEUE_WAIT: Duration = Duration::from_millis(700);

/// A PostgreSQL database for the store, dropped at the end.
struct AuditDb {
    name: String,
}

impl Drop for AuditDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

async fn pg(dbname: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={dbname}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

fn vm_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// tollgate recording to a PostgreSQL store of its own with a small queue, and a way to stall
/// the store's writer.
struct Slow {
    proxy: Proxy,
    recorder: Recorder,
    location: Location,
    key: PublicKey,
    db: AuditDb,
    locker: Option<tokio_postgres::Client>,
}

impl Slow {
    async fn start() -> Slow {
        let mut suffix = [0u8; 4];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut suffix)
            .unwrap();
        let db = AuditDb {
            name: format!(
                "tollgate_backpressure_{}_{}",
                std::process::id(),
                tollgate::audit::record::hex(&suffix)
            ),
        };
        pg("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {}", db.name))
            .await
            .unwrap();
        let location =
            Location::Postgres(format!("postgres://postgres@127.0.0.1:5432/{}", db.name));
        let dir = tempfile::tempdir().unwrap();
        let (signer, key_file) = common::signing_key(dir.path());
        let key = PublicKey::from_bytes(signer.public_key());
        let recorder = Recorder::start(
            Settings {
                queue_bytes: QUEUE_BYTES,
                queue_wait: QUEUE_WAIT,
                linger: Duration::from_millis(1),
                ..common::recorder_settings(location.clone(), "slow")
            },
            signer,
        )
        .unwrap();
        let yaml = format!(
            "audit:\n  sqlite: {}\n  signing_key: {{ file: {} }}\n  results: full\n{}
  - name: shop
    protocol: mysql
    address: 127.0.0.1:3306
    database: test
    user: root
    client_auth: {{ method: password, user: agent, password: {{ file: {} }} }}
",
            dir.path().join("unused.db").display(),
            key_file.display(),
            common::targets(dir.path()),
            dir.path().join("agent-password").display(),
        );
        let stages = Stages {
            record: Some(recorder.clone()),
            ..Stages::default()
        };
        Slow {
            proxy: Proxy::start_mysql(dir, &yaml, stages).await,
            recorder,
            location,
            key,
            db,
            locker: None,
        }
    }

    /// The writer's next INSERT waits behind a lock: the store is slow, not failing.
    async fn stall(&mut self) {
        self.recorder.flush().await.unwrap();
        let locker = pg(&self.db.name).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        self.locker = Some(locker);
    }

    /// The store moves again: everything queued is written.
    async fn resume(&mut self) {
        if let Some(locker) = self.locker.take() {
            locker.batch_execute("COMMIT").await.unwrap();
        }
        self.recorder.flush().await.unwrap();
    }

    async fn assert_verifies(&self) {
        self.recorder.flush().await.unwrap();
        let mut store = Store::open(&self.location, false).await.unwrap();
        let reports = verify::store(&mut store, &self.key).await.unwrap();
        store.close().await;
        assert!(reports.iter().all(|r| r.ok()), "{reports:?}");
    }

    fn mysql(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.proxy.mysql.unwrap().port())
            .user(Some("agent"))
            .pass(Some(common::AGENT_PASSWORD))
            .db_name(Some("shop"))
            .prefer_socket(false)
            .enable_cleartext_plugin(true)
    }
}

/// A statement whose record weighs more than the whole queue.
fn larger_than_the_queue() -> String {
    format!("select '{}' as big", "x".repeat(QUEUE_BYTES + 1))
}

/// The queue's bytes stayed within their bound.
fn assert_queue_bounded(recorder: &Recorder) {
    assert!(
        recorder.queue_bytes() <= QUEUE_BYTES,
        "{} bytes queued",
        recorder.queue_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_slow_store_makes_the_relay_wait_then_refuse_with_58030_in_bounded_memory() {
    let mut s = Slow::start().await;
    let reader = s.proxy.connect().await;
    let other = s.proxy.connect().await;
    reader.simple_query("select 1").await.unwrap();
    s.stall().await;

    let rss_before = vm_kib("VmRSS:");
    let started = Instant::now();
    let e = reader
        .simple_query("select g, repeat('x', 90) as filler from generate_series(1, 2000000) g")
        .await
        .expect_err("a result the store cannot take in time is not shown");
    assert_eq!(common::sqlstate(&e), "58030", "{e:?}");
    assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());
    assert_queue_bounded(&s.recorder);
    // About 200 MB on the wire; the queue holds at most 256 KiB of it.
    let grew = vm_kib("VmRSS:").saturating_sub(rss_before);
    assert!(grew < 32 * 1024, "RSS grew by {grew} KiB during the result");
    assert!(
        reader.simple_query("select 1").await.is_err(),
        "the connection ended"
    );

    // A statement on another connection waits for room, then is refused; the connection stays.
    // (Its text is larger than the queue, so it needs the whole queue: what the stalled writer
    // holds keeps it waiting.)
    let started = Instant::now();
    let e = other
        .simple_query(&larger_than_the_queue())
        .await
        .expect_err("an unrecordable statement is refused");
    assert_eq!(common::sqlstate(&e), "58030", "{e:?}");
    assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());

    s.resume().await;
    let rows = other.simple_query("select 'again'").await.unwrap();
    let again = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(again.as_deref(), Some("again"));
    s.recorder.flush().await.unwrap();
    assert_eq!(s.recorder.queue_bytes(), 0, "every byte's room given back");
    s.assert_verifies().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_slow_store_makes_the_relay_wait_then_refuse_with_1105() {
    use mysql_async::prelude::Queryable;
    let mut s = Slow::start().await;
    let mut reader = mysql_async::Conn::new(s.mysql()).await.unwrap();
    let mut other = mysql_async::Conn::new(s.mysql()).await.unwrap();
    reader.query_drop("select 1").await.unwrap();
    s.stall().await;

    let started = Instant::now();
    let e = reader
        .query::<(u64, String), _>("select seq, repeat('x', 90) from seq_1_to_2000000")
        .await
        .expect_err("a result the store cannot take in time is not shown");
    match &e {
        mysql_async::Error::Server(se) => {
            assert_eq!(se.code, 1105, "{e:?}");
            assert!(se.message.contains("audit trail"), "{e:?}");
        }
        other => panic!("expected ERR 1105, got {other:?}"),
    }
    assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());
    assert_queue_bounded(&s.recorder);

    let started = Instant::now();
    let e = other
        .query_drop(larger_than_the_queue())
        .await
        .expect_err("an unrecordable statement is refused");
    assert!(
        matches!(&e, mysql_async::Error::Server(se) if se.code == 1105),
        "{e:?}"
    );
    assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());

    s.resume().await;
    let again: Vec<String> = other.query("select 'again'").await.unwrap();
    assert_eq!(again, ["again"]);
    drop(reader);
    s.assert_verifies().await;
}
