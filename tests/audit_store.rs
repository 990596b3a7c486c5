//! The session store on both backends (SQLite file, the machine's PostgreSQL): chains written
//! by the recorder verify; every kind of tampering is caught and named; bundles verify with
//! the public key alone; a failing store refuses records and recovers without a gap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate::audit::record::{PublicKey, Signer};
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{self, Event, Outcome, Store, Who, kind, verify};

/// A store location on one backend, removed when dropped.
struct Backend {
    location: Location,
    _dir: tempfile::TempDir,
    pg_db: Option<String>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(db) = self.pg_db.take() {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .output();
        }
    }
}

async fn backend(postgres: bool) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    if !postgres {
        return Backend {
            location: Location::Sqlite(dir.path().join("audit.db")),
            _dir: dir,
            pg_db: None,
        };
    }
    let db = format!("tollgate_audit_{}", std::process::id()) + &random_suffix();
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    Backend {
        location: Location::Postgres(format!("postgres://postgres@127.0.0.1:5432/{db}")),
        _dir: dir,
        pg_db: Some(db),
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b).unwrap();
    format!("_{}", audit::record::hex(&b))
}

fn settings(location: &Location, chain: &str) -> Settings {
    Settings {
        location: location.clone(),
        chain: chain.into(),
        checkpoint_interval: Duration::from_millis(200),
        batch_size: 16,
        queue_size: 1024,
        queue_bytes: 4 << 20,
        queue_wait: Duration::from_secs(2),
        retention_days: 0,
        linger: Duration::from_millis(2),
    }
}

fn signer_pem() -> String {
    Signer::generate_pem()
}

fn event(i: usize) -> Event {
    let who = std::sync::Arc::new(Who {
        session: Some(audit::SessionId(format!("s{:04}", i / 10))),
        subject: Some("ci-agent".into()),
        groups: vec!["ai-agents".into()],
        ..Who::default()
    });
    Event::new(
        kind::STATEMENT,
        if i.is_multiple_of(7) {
            Outcome::Refused
        } else {
            Outcome::Success
        },
        who,
        json!({"sql": format!("SELECT {i}"), "decision": {"action": "allow", "rule": null}}),
    )
}

/// Writes `n` events with a recorder (stopped cleanly) and returns the public key.
async fn write_chain(location: &Location, chain: &str, n: usize) -> PublicKey {
    write_chain_signed(location, chain, n, signer_pem()).await
}

async fn write_chain_signed(location: &Location, chain: &str, n: usize, pem: String) -> PublicKey {
    let signer = Signer::from_pkcs8(pem.as_bytes()).unwrap();
    let public = PublicKey::from_bytes(signer.public_key());
    let location = location.clone();
    let chain = chain.to_owned();
    // The recorder's stop blocks: run it off the test runtime.
    tokio::task::spawn_blocking(move || {
        let r = Recorder::start(settings(&location, &chain), signer).unwrap();
        for i in 0..n {
            r.record(event(i)).unwrap();
            // Spread over a few checkpoint intervals.
            std::thread::sleep(Duration::from_millis(2));
        }
        r.stop(json!({"reason": "test"}));
    })
    .await
    .unwrap();
    public
}

async fn verify_store(location: &Location, key: &PublicKey) -> Vec<verify::ChainReport> {
    let mut store = Store::open(location, false).await.unwrap();
    let reports = verify::store(&mut store, key).await.unwrap();
    store.close().await;
    reports
}

fn first_problem(reports: &[verify::ChainReport]) -> Option<verify::Problem> {
    reports.iter().flat_map(|r| r.problems.clone()).next()
}

async fn raw(location: &Location, sql: &str) -> u64 {
    let mut store = Store::open(location, false).await.unwrap();
    let n = store.execute_raw(sql).await.unwrap();
    store.close().await;
    n
}

/// Every tampering on a fresh copy of a chain of 60 records (+ start and stop).
async fn tamper_suite(postgres: bool) {
    // Untouched: verifies, every record signed.
    let b = backend(postgres).await;
    let key = write_chain(&b.location, "east", 60).await;
    let reports = verify_store(&b.location, &key).await;
    assert_eq!(reports.len(), 1);
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    assert_eq!(reports[0].first_seq, Some(1));
    assert_eq!(
        reports[0].last_seq,
        Some(62),
        "daemon_start + 60 + daemon_stop"
    );
    assert_eq!(reports[0].unsigned_tail, 0, "a clean stop signs the head");
    // Another key does not verify it.
    let other = Signer::from_pkcs8(signer_pem().as_bytes()).unwrap();
    let reports = verify_store(&b.location, &PublicKey::from_bytes(other.public_key())).await;
    assert!(!reports[0].ok());
    drop(b);

    type Case = (&'static str, &'static str, u64, &'static str);
    let cases: &[Case] = &[
        (
            "one byte of a body changed",
            "UPDATE audit_records SET body = replace(body, 'SELECT 20', 'SELECT 21') WHERE seq = 22",
            22,
            "does not match its hash",
        ),
        (
            "a body changed and its hash recomputed elsewhere (hash column swapped)",
            "UPDATE audit_records SET hash = (SELECT hash FROM audit_records WHERE seq = 31) WHERE seq = 30",
            30,
            "does not match its hash",
        ),
        (
            "a column beside the body changed",
            "UPDATE audit_records SET outcome = 'success' WHERE seq = 9",
            9,
            "disagree with its body",
        ),
        (
            "a record deleted",
            "DELETE FROM audit_records WHERE seq = 40",
            40,
            "deleted",
        ),
        (
            "the first records deleted",
            "DELETE FROM audit_records WHERE seq <= 3",
            4,
            "no checkpoint anchors",
        ),
        (
            "the tail cut",
            "DELETE FROM audit_records WHERE seq > 55",
            56,
            "truncated",
        ),
    ];
    for (what, sql, seq, says) in cases {
        let b = backend(postgres).await;
        let key = write_chain(&b.location, "east", 60).await;
        assert!(raw(&b.location, sql).await > 0, "{what}: nothing changed");
        let reports = verify_store(&b.location, &key).await;
        let p = first_problem(&reports).unwrap_or_else(|| panic!("{what}: not detected"));
        assert_eq!(p.seq, *seq, "{what}: {p}");
        assert!(p.message.contains(says), "{what}: {p}");
    }

    // Two records swapped (their positions exchanged).
    let b = backend(postgres).await;
    let key = write_chain(&b.location, "east", 60).await;
    for sql in [
        "UPDATE audit_records SET seq = -1 WHERE seq = 12",
        "UPDATE audit_records SET seq = 12 WHERE seq = 13",
        "UPDATE audit_records SET seq = 13 WHERE seq = -1",
    ] {
        raw(&b.location, sql).await;
    }
    let p = first_problem(&verify_store(&b.location, &key).await).expect("swap detected");
    assert!(p.seq == 11 || p.seq == 12, "{p}");
    drop(b);

    // A forged record inserted: later records shifted up by one to make room.
    let b = backend(postgres).await;
    let key = write_chain(&b.location, "east", 60).await;
    let mut store = Store::open(&b.location, false).await.unwrap();
    let page = store.page("east", 19, 1).await.unwrap();
    let r = &page[0];
    let forged = r.body.replace("SELECT", "DROP");
    for s in (20..=62).rev() {
        store
            .execute_raw(&format!(
                "UPDATE audit_records SET seq = {} WHERE seq = {s}",
                s + 1
            ))
            .await
            .unwrap();
    }
    store
        .execute_raw(&format!(
            "INSERT INTO audit_records (chain, seq, ts, type, outcome, session, body, hash) VALUES ('east', 20, '{}', '{}', '{}', {}, '{}', '{}')",
            r.ts,
            r.kind,
            r.outcome,
            r.session.as_ref().map_or("NULL".into(), |s| format!("'{s}'")),
            forged.replace('\'', "''"),
            audit::record::hash(&forged)
        ))
        .await
        .unwrap();
    store.close().await;
    let p = first_problem(&verify_store(&b.location, &key).await).expect("insertion detected");
    assert!(p.seq <= 21 && p.seq >= 19, "{p}");
}

#[tokio::test]
async fn sqlite_chains_verify_and_tampering_is_named() {
    tamper_suite(false).await;
}

#[tokio::test]
async fn postgres_chains_verify_and_tampering_is_named() {
    tamper_suite(true).await;
}

/// Several writers on one PostgreSQL store: each its own chain, all verify together.
#[tokio::test]
async fn postgres_chains_of_several_instances_verify_together() {
    let b = backend(true).await;
    let pem = signer_pem();
    let mut handles = Vec::new();
    for name in ["pod-a", "pod-b"] {
        let location = b.location.clone();
        let pem = pem.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let signer = Signer::from_pkcs8(pem.as_bytes()).unwrap();
            let r = Recorder::start(settings(&location, name), signer).unwrap();
            for i in 0..200 {
                r.record(event(i)).unwrap();
            }
            r.stop(json!({}));
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let key = PublicKey::from_bytes(Signer::from_pkcs8(pem.as_bytes()).unwrap().public_key());
    let reports = verify_store(&b.location, &key).await;
    assert_eq!(
        reports.iter().map(|r| r.chain.as_str()).collect::<Vec<_>>(),
        ["pod-a", "pod-b"]
    );
    for r in &reports {
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.last_seq, Some(202));
    }
}

/// A bundle verifies on its own with the public key; a changed line does not.
#[tokio::test]
async fn bundles_verify_offline_and_periods_are_anchored() {
    let b = backend(false).await;
    let key = write_chain(&b.location, "east", 300).await;
    let mut store = Store::open(&b.location, false).await.unwrap();
    let period = audit::export::Period {
        since: None,
        until: None,
    };
    let mut out = Vec::new();
    let n = audit::export::write(
        &mut store,
        audit::export::Format::Bundle,
        &period,
        Some(key.key_id()),
        &mut out,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(n, 302);
    let reports = verify::bundle(&out[..], &key).unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    assert_eq!(reports[0].records, 302);

    // One changed byte in the middle of the bundle.
    let text = String::from_utf8(out.clone()).unwrap();
    let tampered = text.replacen("SELECT 150", "SELECT 151", 1);
    assert_ne!(tampered, text);
    let reports = verify::bundle(tampered.as_bytes(), &key).unwrap();
    assert!(!reports[0].ok());
    // A bundle whose last records were cut out (its checkpoints kept).
    let cut: String = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["line"] != "record" || v["seq"].as_u64().unwrap() <= 290
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let reports = verify::bundle(cut.as_bytes(), &key).unwrap();
    let p = first_problem(&reports).expect("cut detected");
    assert!(p.message.contains("truncated"), "{p}");

    // A period in the middle: extended to checkpoints at both ends and anchored.
    let page = store.page("east", 100, 1).await.unwrap();
    let since = page[0].ts.clone();
    let page = store.page("east", 200, 1).await.unwrap();
    let until = page[0].ts.clone();
    let mut out = Vec::new();
    let period = audit::export::Period {
        since: Some(since),
        until: Some(until),
    };
    audit::export::write(
        &mut store,
        audit::export::Format::Bundle,
        &period,
        None,
        &mut out,
        &|_| {},
    )
    .await
    .unwrap();
    let reports = verify::bundle(&out[..], &key).unwrap();
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    let anchor = store.checkpoint_before("east", 101).await.unwrap();
    let anchor = anchor.expect("a checkpoint before the period (checkpoints every 200 ms)");
    assert_eq!(reports[0].first_seq, Some(anchor.seq + 1));
    assert!(reports[0].last_seq.unwrap() >= 200);

    // The other formats: one line per record in the period, parseable.
    for (format, check) in [
        (audit::export::Format::Jsonl, "\"record\":{"),
        (audit::export::Format::Ocsf, "\"class_uid\":6005"),
        (audit::export::Format::Csv, ",statement,"),
    ] {
        let mut out = Vec::new();
        let n = audit::export::write(&mut store, format, &period, None, &mut out, &|_| {})
            .await
            .unwrap();
        assert_eq!(n, 100, "{format:?}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(check), "{format:?}: {text:.300}");
        if format != audit::export::Format::Csv {
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
        }
    }
}

/// A locked SQLite store: records are refused (not lost, not reordered) until it frees up;
/// the outage is then recorded and the chain verifies.
#[tokio::test]
async fn a_failing_store_refuses_then_recovers_the_chain() {
    let b = backend(false).await;
    let Location::Sqlite(path) = b.location.clone() else {
        unreachable!()
    };
    let pem = signer_pem();
    let signer = Signer::from_pkcs8(pem.as_bytes()).unwrap();
    let key = PublicKey::from_bytes(signer.public_key());
    let recorder = Recorder::start(settings(&b.location, "east"), signer).unwrap();
    recorder.record(event(1)).unwrap();
    recorder.flush().await.unwrap();

    // Another process holds the database locked for writing.
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,sys,time\nc=sqlite3.connect({:?},isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.readline()\nc.execute('COMMIT')",
            path.display().to_string()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    // Accepted before the writer notices, then refused.
    let mut refused = false;
    for i in 0..200 {
        if recorder.record(event(100 + i)).is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a locked store must make the recorder refuse");
    assert!(!recorder.healthy());

    // Freed: the queued records are written in order and the outage recorded.
    use std::io::Write;
    writeln!(locker.stdin.as_mut().unwrap()).unwrap();
    locker.wait().unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        if recorder.healthy() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "the recorder must recover");
    recorder.record(event(999)).unwrap();
    recorder.flush().await.unwrap();
    let reports = verify_store(&b.location, &key).await;
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    let mut store = Store::open(&b.location, false).await.unwrap();
    let failures = store
        .of_types(&[kind::STORE_FAILURE], "", "9999")
        .await
        .unwrap();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].body.contains("\"since\""));
}

/// Retention: records up to the newest checkpoint older than the cutoff go; that checkpoint
/// anchors what remains, which still verifies; the pruning is recorded.
#[tokio::test]
async fn pruning_removes_checkpointed_segments_and_the_rest_verifies() {
    let b = backend(false).await;
    let pem = signer_pem();
    let key = write_chain_signed(&b.location, "east", 300, pem.clone()).await;
    let mut store = Store::open(&b.location, false).await.unwrap();
    let anchor = store
        .checkpoint_before("east", 250)
        .await
        .unwrap()
        .expect("checkpoints every 200 ms");
    // Everything signed up to the anchor counts as old.
    let cutoff = format!("{}~", anchor.ts);
    let pruned = tollgate::audit::writer::prune(&mut store, "east", &cutoff)
        .await
        .unwrap()
        .expect("something to prune");
    assert_eq!(pruned, (anchor.seq, anchor.seq));
    let first = store.page("east", 0, 1).await.unwrap();
    assert_eq!(first[0].seq, anchor.seq + 1);
    store.close().await;
    // Cut like a pruning but not recorded as one (an insider's deletion): named.
    let p = first_problem(&verify_store(&b.location, &key).await).expect("detected");
    assert!(p.message.contains("records no pruning"), "{p}");
    // The writer records its prunings: with that record, the rest verifies.
    let signer = Signer::from_pkcs8(pem.as_bytes()).unwrap();
    tollgate::audit::writer::append_once(
        &b.location,
        "east",
        &signer,
        Event::new(
            kind::AUDIT_PRUNED,
            Outcome::Success,
            Who::daemon(),
            json!({"through_seq": anchor.seq, "removed": anchor.seq}),
        ),
    )
    .await
    .unwrap();
    let reports = verify_store(&b.location, &key).await;
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    assert_eq!(reports[0].first_seq, Some(anchor.seq + 1));
    // Without the anchor, the cut is named.
    raw(
        &b.location,
        &format!("DELETE FROM audit_checkpoints WHERE seq = {}", anchor.seq),
    )
    .await;
    let p = first_problem(&verify_store(&b.location, &key).await).expect("detected");
    assert!(p.message.contains("no checkpoint anchors"), "{p}");
}

/// A TCP relay to the local PostgreSQL that can be cut (as if the server stopped) and restored.
struct Cuttable {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    async fn start() -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Cuttable { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The PostgreSQL store goes away mid-stream: records are refused, then the writer reconnects,
/// writes what it held in order, records the outage, and the chain verifies.
#[tokio::test]
async fn a_postgres_store_that_goes_away_is_reconnected_without_a_gap() {
    let b = backend(true).await;
    let Location::Postgres(url) = &b.location else {
        unreachable!()
    };
    let relay = Cuttable::start().await;
    let via = Location::Postgres(url.replace(":5432/", &format!(":{}/", relay.port)));
    let signer = Signer::from_pkcs8(signer_pem().as_bytes()).unwrap();
    let key = PublicKey::from_bytes(signer.public_key());
    let recorder = tokio::task::spawn_blocking({
        let via = via.clone();
        move || Recorder::start(settings(&via, "east"), signer).unwrap()
    })
    .await
    .unwrap();
    recorder.record(event(1)).unwrap();
    recorder.flush().await.unwrap();
    relay.cut();
    let mut accepted = 0;
    let mut refused = false;
    for i in 0..200 {
        match recorder.record(event(10 + i)) {
            Ok(()) => accepted += 1,
            Err(_) => {
                refused = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "records refused while the store is gone");
    assert!(accepted > 0);
    relay.restore();
    let mut healthy = false;
    for _ in 0..200 {
        if recorder.healthy() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "the writer reconnects");
    recorder.flush().await.unwrap();
    let reports = verify_store(&b.location, &key).await;
    assert!(reports[0].ok(), "{:?}", reports[0].problems);
    // start + 1 + every accepted record + the outage.
    assert_eq!(reports[0].last_seq, Some(2 + accepted + 1));
}
