//! The session store's cost: encoding and hashing one record, and records appended per second
//! through the recorder (queue, batches, transactions, checkpoints) on each backend.
//!
//! `cargo bench --bench audit`. The PostgreSQL backend uses the machine's server
//! (127.0.0.1:5432, trusting postgres) and a database `tollgate_bench_audit_store` it recreates.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tollgate::audit::record::{self, Signer};
use tollgate::audit::store::Location;
use tollgate::audit::writer::{Recorder, Settings};
use tollgate::audit::{Event, Outcome, SessionId, Who, kind};

fn who() -> Arc<Who> {
    Arc::new(Who {
        session: Some(SessionId::random()),
        subject: Some("ci-agent".into()),
        groups: vec!["ai-agents".into()],
        client_id: Some("github-actions".into()),
        issuer: Some("https://idp.example".into()),
        upstream_role: Some("agent_ro".into()),
        client_addr: Some("10.0.0.7:50122".into()),
        application_name: Some("pgbench".into()),
        target: Some("payments".into()),
        database: Some("payments".into()),
        cache: Default::default(),
    })
}

/// A typical statement record and a typical one-row result record.
fn events(who: &Arc<Who>) -> [Event; 2] {
    [
        Event::new(
            kind::STATEMENT,
            Outcome::Success,
            who.clone(),
            json!({"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;", "origin": "simple",
                   "decision": {"action": "allow", "decided": "allow", "rule": "agents-read", "reason": "reads allowed", "dry_run": false},
                   "kinds": ["read"]}),
        ),
        Event::new(
            kind::SERVER_FRAMES,
            Outcome::Info,
            who.clone(),
            json!({"frames": [{"t": "T", "columns": ["abalance"]}, {"t": "D", "values": ["-4711"]},
                              {"t": "C", "tag": "SELECT 1"}, {"t": "Z", "status": "I"}],
                   "rows": 1, "bytes": 11, "masked": 0}),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let who = who();
    let mut g = c.benchmark_group("audit_record");
    g.throughput(Throughput::Elements(2));
    g.bench_function("encode_and_hash", |b| {
        b.iter(|| {
            for e in events(&who) {
                let body = e.encode("bench", 42, record::GENESIS, "2026-11-26T10:00:00.000000Z");
                black_box(record::hash(&body));
            }
        })
    });
    g.finish();
}

fn recorder(location: Location) -> Recorder {
    let signer = Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap();
    Recorder::start(
        Settings {
            location,
            chain: "bench".into(),
            checkpoint_interval: Duration::from_secs(10),
            batch_size: 512,
            queue_size: 65_536,
            queue_bytes: 4 << 20,
            queue_wait: Duration::from_secs(2),
            retention_days: 0,
            linger: Duration::from_millis(2),
        },
        signer,
    )
    .unwrap()
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec![("sqlite", Location::Sqlite(dir.path().join("bench.db")))];
    let db = "tollgate_bench_audit_store";
    let created = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS {db}"))
        .arg("-c")
        .arg(format!("CREATE DATABASE {db}"))
        .status()
        .is_ok_and(|s| s.success());
    if created {
        backends.push((
            "postgres",
            Location::Postgres(format!("postgres://postgres@127.0.0.1:5432/{db}")),
        ));
    }
    let who = who();
    let mut g = c.benchmark_group("audit_append");
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    for (name, location) in backends {
        let r = recorder(location);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..N {
                        let [a, b] = events(&who);
                        let e = if i % 2 == 0 { a } else { b };
                        while r.record(e.clone()).is_err() {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                    rt.block_on(r.flush()).unwrap();
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, append);
criterion_main!(benches);
