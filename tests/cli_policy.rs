//! Issue #20: `tollgate policy test` over the example policy's own cases (passing, and failing
//! with the case's file:line on a wrong expectation), and `tollgate policy backtest` over a
//! session recorded by a running tollgate, decided again under a changed policy.

use std::process::Command;
use std::time::Duration;

use common::cli::*;

mod common;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("USER", "auditor-alice")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_cases_pass_and_a_wrong_expectation_fails_naming_its_line() {
    let (ok, out, err) = run(&["policy", "test", "config/policies/agents.cases.yaml"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    let cases: usize = out.split(' ').next().unwrap().parse().unwrap();
    assert!(cases >= 25, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let policy = std::fs::canonicalize("config/policies/agents.yaml").unwrap();
    let shipped = std::fs::read_to_string("config/policies/agents.cases.yaml").unwrap();
    let wrong = shipped
        .replace(
            "policies: [agents.yaml]",
            &format!("policies: [{}]", policy.display()),
        )
        .replace(
            "{ sql: \"drop table cards\", expect: deny,",
            "{ sql: \"drop table cards\", expect: allow,",
        );
    let line = wrong
        .lines()
        .position(|l| l.contains("\"drop table cards\", expect: allow"))
        .unwrap()
        + 1;
    let file = dir.path().join("wrong.cases.yaml");
    std::fs::write(&file, wrong).unwrap();
    let (ok, out, _) = run(&["policy", "test", file.to_str().unwrap()]);
    assert!(!ok, "a mismatch exits 1: {out}");
    assert!(
        out.contains(&format!(
            "wrong.cases.yaml:{line}: case \"drop table cards\": expected allow by no-schema-change, got deny by no-schema-change"
        )),
        "{out}"
    );
    assert!(out.contains(", 1 failed"), "{out}");

    // A case file that does not parse: its place, and exit 1.
    std::fs::write(&file, "cases:\n  - { sql: select 1, expekt: allow }\n").unwrap();
    let (ok, _, err) = run(&[
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("wrong.cases.yaml:2:"), "{err}");
    assert!(err.contains("expekt"), "{err}");
}

/// Cases name the session's reason and the person the agent acts for, as rules with
/// `require_reason` and `actor:` see them in the daemon.
#[test]
fn cases_give_a_session_reason_and_an_actor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "
default: deny
rules:
  - id: writes-for-a-person
    match: { groups: [ai-agents], kinds: [write], actor: absent }
    action: deny
    reason: agents change data only on behalf of a named person
  - id: writes-with-a-reason
    match: { groups: [ai-agents], kinds: [write] }
    action: allow
    require_reason: true
  - id: dba-unparsed
    match: { groups: [dba], unparsed: true }
    action: allow
    require_reason: true
",
    )
    .unwrap();
    let cases = dir.path().join("p.cases.yaml");
    let write = "update orders set paid = true where id = 1";
    std::fs::write(
        &cases,
        format!(
            "policies: [p.yaml]
defaults: {{ sub: agent-7, groups: [ai-agents], database: shop }}
cases:
  - {{ sql: \"{write}\", expect: deny, rule: writes-for-a-person }}
  - {{ sql: \"{write}\", actor: alice, expect: deny, rule: writes-with-a-reason }}
  - {{ sql: \"{write}\", actor: alice, reason: INC-1234, expect: allow, rule: writes-with-a-reason }}
  - {{ sql: \"/* reason: INC-9 */ {write}\", actor: alice, expect: allow, rule: writes-with-a-reason }}
  # SQL tollgate cannot parse, allowed by an unparsed rule that requires a reason.
  - {{ sql: \"selec 1\", sub: dba-1, groups: [dba], expect: deny, rule: dba-unparsed }}
  - {{ sql: \"selec 1\", sub: dba-1, groups: [dba], reason: CHG-7, expect: allow, rule: dba-unparsed }}
"
        ),
    )
    .unwrap();
    let (ok, out, err) = run(&["policy", "test", cases.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("6 passed, 0 failed"), "{out}");
}

/// A session recorded under the example policy, then decided again under the example plus a
/// rule that denies reading pg_class.
#[tokio::test]
async fn backtest_reports_the_rule_changes_of_a_recorded_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = audited_config(dir.path(), port);
    let example = std::fs::read_to_string("config/policies/agents.yaml").unwrap();
    std::fs::write(dir.path().join("old.yaml"), &example).unwrap();
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("policies: [old.yaml]\n");
    std::fs::write(&config, yaml).unwrap();
    keygen(dir.path());
    let log = dir.path().join("stderr.log");
    let mut child = serve(&config, &log);
    let url =
        format!("host=127.0.0.1 port={port} user=agent password=pw dbname=test sslmode=disable");
    let client = connect_when_up(&url).await;
    client.simple_query("select 1").await.unwrap();
    client
        .simple_query("select '4111111111111111' as n from pg_class limit 1")
        .await
        .unwrap();
    client
        .simple_query("select relname from pg_class limit 2")
        .await
        .unwrap();
    // Allowed when it ran; recorded masked (`card411111******1111`), which no longer parses.
    client
        .simple_query("select 1 as card4111111111111111")
        .await
        .unwrap();
    // Unreadable when it ran, and still: no change.
    client.simple_query("selec 1").await.unwrap_err();
    let refused = client
        .simple_query("drop table nothing_here")
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "42501");
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&mut child);

    let changed = example.clone()
        + "
  - id: no-catalog-reads
    match:
      tables: [pg_class]
    action: deny
    reason: the catalog is not read by agents
";
    let new = dir.path().join("new.yaml");
    std::fs::write(&new, changed).unwrap();
    let (ok, out, err) = run(&[
        "policy",
        "backtest",
        "--policy",
        new.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("6 statement(s) recorded"), "{out}");
    assert!(
        out.contains("3 unchanged, 3 changed, 1 no longer parse"),
        "{out}"
    );
    assert!(
        out.contains("allow by agents-read -> deny by default (no longer parses): 1"),
        "{out}"
    );
    assert!(
        out.contains("allow by agents-read -> deny by no-catalog-reads: 2"),
        "{out}"
    );
    assert!(
        out.contains("411111******1111"),
        "samples are shown masked: {out}"
    );
    assert_no_pan(out.as_bytes(), "backtest output");

    // The backtest is itself a recorded read of the trail.
    let export = tollgate_cmd(
        &["audit", "export", "--format", "jsonl", "--config"],
        &config,
    );
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(text.contains("\"command\":\"policy backtest\""), "{text}");
}
