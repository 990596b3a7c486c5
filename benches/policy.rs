//! Classification plus decision for typical agent statements, cold (parsed every time) and
//! cached (the statement text seen before), with the example agent policy.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tollgate::auth::Identity;
use tollgate::policy::classify::{SqlDialect, classify};
use tollgate::policy::{Policy, RuleSet};

const STATEMENTS: &[(&str, &str)] = &[
    (
        "point-select",
        "SELECT id, name, email FROM customers WHERE id = $1",
    ),
    (
        "join",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 50",
    ),
    (
        "update",
        "UPDATE orders SET status = 'shipped' WHERE id = $1",
    ),
    (
        "cte-report",
        "WITH recent AS (SELECT customer_id, sum(total) AS spent FROM orders WHERE created_at > now() - interval '30 days' \
         GROUP BY customer_id) SELECT c.name, r.spent FROM recent r JOIN customers c ON c.id = r.customer_id \
         WHERE r.spent > 1000 ORDER BY r.spent DESC LIMIT 20",
    ),
    (
        "pgbench-select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
    ),
];

fn bench(c: &mut Criterion) {
    let policy = Policy::new(RuleSet::load(&["config/policies/agents.yaml"]).unwrap());
    let agent = Identity {
        subject: "agent".into(),
        groups: vec!["ai-agents".into()],
        client_id: None,
        issuer: "https://idp".into(),
        expires_at: None,
        actor: None,
    };
    let mut group = c.benchmark_group("policy");
    for (name, sql) in STATEMENTS {
        group.bench_with_input(BenchmarkId::new("cold", name), sql, |b, sql| {
            b.iter(|| {
                let classified = classify(black_box(sql), SqlDialect::Postgres).unwrap();
                black_box(policy.decision(&agent, "app", &classified).action)
            })
        });
        group.bench_with_input(BenchmarkId::new("cached", name), sql, |b, sql| {
            // What the inspect stage does per statement: a cache lookup, then the rules.
            b.iter(|| {
                let classified = policy.classify(black_box(sql), SqlDialect::Postgres);
                let list = classified.as_ref().as_ref().unwrap();
                black_box(policy.decision(&agent, "app", list).action)
            })
        });
    }
    // Simple-protocol statements with inlined literals: a new text every time, one shape.
    let mut n = 0u64;
    group.bench_function("fingerprinted/pgbench-select", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};");
            let classified = policy.classify(&sql, SqlDialect::Postgres);
            let list = classified.as_ref().as_ref().unwrap();
            black_box(policy.decision(&agent, "app", list).action)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
