//! Real MySQL client libraries through tollgate under the example agent policy: PyMySQL
//! (client-side escaping with backslashes, `SET AUTOCOMMIT` at connect, multi-statements) and
//! node's mysql2 (client-side interpolation, and server-side prepared statements through
//! `execute`). Both read masked card numbers and are refused what the policy refuses, and the
//! connection keeps working. (mysql_async and the mariadb CLI run in `tests/mysql.rs`.)
//!
//! Needs PyMySQL (`pip install pymysql`) and mysql2 under `$TOLLGATE_NODE_MODULES` (default
//! `/opt/tollgate-node/node_modules`), as `.ci/run` installs them.

mod common;

use common::mysql::{Setup, direct, setup_policy};
use mysql_async::prelude::*;
use tokio::process::Command;

async fn example(name: &str) -> Setup {
    setup_policy(
        name,
        "",
        Some(std::path::Path::new("config/policies/agents.yaml")),
        false,
    )
    .await
}

async fn run(program: &str, script: &str, env: &[(&str, String)]) -> String {
    let out = Command::new(program)
        .arg(if program == "node" { "-e" } else { "-c" })
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn env(s: &Setup, sub: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TG_PORT", s.proxy.mysql.unwrap().port().to_string()),
        ("TG_USER", sub.to_owned()),
        ("TG_TOKEN", s.token(sub, &["ai-agents"])),
        ("TG_TABLE", s.table.clone()),
    ]
}

const PYMYSQL: &str = r#"
import os, pymysql
from pymysql.constants import CLIENT
t = os.environ["TG_TABLE"]
c = pymysql.connect(host="127.0.0.1", port=int(os.environ["TG_PORT"]), user=os.environ["TG_USER"],
                    password=os.environ["TG_TOKEN"], database="shop", client_flag=CLIENT.MULTI_STATEMENTS,
                    ssl={"check_hostname": False, "verify_mode": 0})
cur = c.cursor()
# Client-side escaping: quotes, backslashes, a NUL, a newline, non-ASCII.
cur.execute("SELECT %s, %s, %s", ("it's", "back\\slash\x00nul\nline", "caf\u00e9 \u00a0"))
print("escaped", cur.fetchone() == ("it's", "back\\slash\x00nul\nline", "caf\u00e9 \u00a0"))
cur.execute(f"SELECT id, pan FROM {t} WHERE id = %s", (1,))
print("pan", cur.fetchone()[1])
cur.executemany(f"SELECT note FROM {t} WHERE id = %s", [(1,), (2,)])
cur.execute("SELECT 1; SELECT 2")
print("multi", cur.fetchall(), cur.nextset(), cur.fetchall())
try:
    cur.execute(f"DELETE FROM {t}")
    print("delete ran")
except pymysql.err.OperationalError as e:
    print("refused", e.args[0])
cur.execute("SELECT 3")
print("after", cur.fetchone()[0])
c.commit()
c.close()
"#;

#[tokio::test]
async fn pymysql_escapes_multi_statements_and_refusals() {
    let s = example("pymysql").await;
    let out = run("python3", PYMYSQL, &env(&s, "agent-pymysql")).await;
    assert!(out.contains("escaped True"), "{out}");
    assert!(out.contains("pan 411111******1111"), "{out}");
    assert!(out.contains("multi ((1,),) True ((2,),)"), "{out}");
    assert!(out.contains("refused 1227"), "{out}");
    assert!(out.contains("after 3"), "{out}");
    let mut d = direct().await;
    let n: u64 = d
        .query_first(format!("select count(*) from {}", s.table))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2, "the refused DELETE did not run");
}

const MYSQL2: &str = r#"
const mysql = require("mysql2/promise");
(async () => {
  const t = process.env.TG_TABLE;
  const c = await mysql.createConnection({ host: "127.0.0.1", port: +process.env.TG_PORT,
    user: process.env.TG_USER, password: process.env.TG_TOKEN, database: "shop",
    ssl: { rejectUnauthorized: false }, authPlugins: { mysql_clear_password: () => () => Buffer.from(process.env.TG_TOKEN + "\0") } });
  let [rows] = await c.query("SELECT ? AS a, ? AS b", ["it's", "back\\slash"]);
  console.log("escaped", rows[0].a === "it's" && rows[0].b === "back\\slash");
  [rows] = await c.execute(`SELECT id, pan FROM ${t} WHERE id = ?`, [1]);
  console.log("prepared pan", rows[0].pan);
  [rows] = await c.execute(`SELECT note FROM ${t} WHERE id = ?`, [2]);
  console.log("prepared again", rows[0].note);
  try { await c.execute(`DELETE FROM ${t} WHERE id = ?`, [1]); console.log("delete ran"); }
  catch (e) { console.log("refused", e.errno); }
  [rows] = await c.query("SELECT 4 AS n");
  console.log("after", rows[0].n);
  await c.end();
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn node_mysql2_interpolation_and_prepared_statements() {
    let s = example("mysql2").await;
    let mut env = env(&s, "agent-mysql2");
    env.push((
        "NODE_PATH",
        std::env::var("TOLLGATE_NODE_MODULES")
            .unwrap_or_else(|_| "/opt/tollgate-node/node_modules".into()),
    ));
    let out = run("node", MYSQL2, &env).await;
    assert!(out.contains("escaped true"), "{out}");
    assert!(out.contains("prepared pan 411111******1111"), "{out}");
    assert!(out.contains("prepared again plain"), "{out}");
    assert!(out.contains("refused 1227"), "{out}");
    assert!(out.contains("after 4"), "{out}");
}
