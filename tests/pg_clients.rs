//! Real command-line clients through tollgate: psql and pgbench.

mod common;

use common::Proxy;
use tokio::process::Command;
use tokio_postgres::NoTls;
use tollgate::pipeline::Stages;

/// A proxy whose `bench` target is a database of its own (made here if missing).
async fn proxy_with_database(db: &str) -> Proxy {
    let (c, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=postgres", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let exists = c
        .query_opt("select 1 from pg_database where datname = $1", &[&db])
        .await
        .unwrap()
        .is_some();
    if !exists {
        // Two test binaries may race to create it; either way it exists afterwards.
        let _ = c.batch_execute(&format!("create database {db}")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = common::targets(dir.path());
    yaml.push_str(&format!(
        "
  - name: {db}
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, user: agent, password: {{ file: {} }} }}
",
        dir.path().join("agent-password").display()
    ));
    Proxy::start_yaml(dir, &yaml, Stages::default()).await
}

fn env_for(proxy: &Proxy, db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PGHOST", "127.0.0.1".into()),
        ("PGPORT", proxy.addr.port().to_string()),
        ("PGUSER", "agent".into()),
        ("PGPASSWORD", common::AGENT_PASSWORD.into()),
        ("PGDATABASE", db.into()),
        ("PGSSLMODE", "disable".into()),
    ]
}

async fn run(program: &str, args: &[&str], env: &[(&str, String)], stdin: Option<&str>) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn psql_simple_multi_statement_and_copy() {
    let proxy = proxy_with_database("tollgate_psql").await;
    let env = env_for(&proxy, "tollgate_psql");
    let out = run(
        "psql",
        &["-At", "-c", "select 1; select 'a' || 'b'"],
        &env,
        None,
    )
    .await;
    assert_eq!(out, "1\nab\n");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&data, &rows).unwrap();
    let back = dir.path().join("out.csv");
    let script = format!(
        "drop table if exists psql_copy;
create table psql_copy (id int primary key, label text);
\\copy psql_copy from '{}' with (format csv)
select count(*), sum(id) from psql_copy;
\\copy (select * from psql_copy order by id) to '{}' with (format csv)
\\set ON_ERROR_STOP 0
insert into psql_copy values (1, 'duplicate');
select 'still here';
",
        data.display(),
        back.display()
    );
    let out = run(
        "psql",
        &["-At", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        &env,
        Some(&script),
    )
    .await;
    assert!(out.contains("5000|12502500\n"), "{out}");
    assert!(out.contains("still here"), "{out}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), rows);
}

#[tokio::test]
async fn pgbench_in_every_query_mode() {
    let proxy = proxy_with_database("tollgate_pgbench").await;
    let env = env_for(&proxy, "tollgate_pgbench");
    // Initialisation through tollgate: DDL, COPY of 100,000 rows, VACUUM, primary keys.
    run("pgbench", &["-i", "-s", "1", "-q"], &env, None).await;
    for mode in ["simple", "extended", "prepared"] {
        let out = run(
            "pgbench",
            &["-M", mode, "-c", "4", "-j", "2", "-t", "100"],
            &env,
            None,
        )
        .await;
        assert!(
            out.contains("number of transactions actually processed: 400/400"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
}
