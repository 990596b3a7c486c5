//! The architecture invariants of docs/ARCHITECTURE.md that can be checked by reading the
//! sources: which module may import which, and how long a file may grow.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        if d.is_file() {
            out.push(d);
            continue;
        }
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Lines of the files under `dir` that mention any of `needles` (comments included: a doc
/// link to a forbidden module is a dependency too).
fn mentions(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let files = sources(dir);
    assert!(!files.is_empty(), "no sources under {dir}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

/// The checks see what they are meant to see.
#[test]
fn the_checks_find_imports() {
    assert!(!mentions("src/protocol/mysql", &["crate::conn"]).is_empty());
    assert!(!mentions("src/server.rs", &["crate::conn"]).is_empty());
}

#[test]
fn no_module_under_protocol_mysql_imports_protocol_pg() {
    let found = mentions("src/protocol/mysql", &["protocol::pg", "pg::"]);
    assert!(
        found.is_empty(),
        "the MySQL wire imports the PostgreSQL wire:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_module_under_protocol_pg_imports_protocol_mysql() {
    let found = mentions("src/protocol/pg", &["protocol::mysql", "mysql::"]);
    assert!(
        found.is_empty(),
        "the PostgreSQL wire imports the MySQL wire:\n{}",
        found.join("\n")
    );
}

#[test]
fn policy_imports_no_io_crate_and_nothing_from_audit() {
    let found = mentions(
        "src/policy",
        &[
            "crate::audit",
            "tokio",
            "sqlx",
            "reqwest",
            "std::net",
            "crate::conn",
            "crate::protocol",
        ],
    );
    assert!(
        found.is_empty(),
        "policy must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn mask_imports_no_io_crate_and_no_wire() {
    let found = mentions(
        "src/mask",
        &[
            "tokio",
            "sqlx",
            "crate::audit",
            "crate::protocol",
            "crate::conn",
        ],
    );
    assert!(
        found.is_empty(),
        "mask must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_server_and_the_connection_layer_import_no_wire() {
    let mut found = mentions("src/server.rs", &["crate::protocol"]);
    found.extend(mentions("src/conn", &["crate::protocol"]));
    assert!(
        found.is_empty(),
        "server and conn must not depend on a wire:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_wire_imports_the_server() {
    let found = mentions("src/protocol", &["crate::server", "crate::daemon"]);
    assert!(
        found.is_empty(),
        "a wire imports the accept loop or the daemon:\n{}",
        found.join("\n")
    );
}

/// No source file grows past about 800 lines unless its first lines say why it must be one
/// piece (`one piece:`).
#[test]
fn source_files_stay_readable() {
    let mut long = Vec::new();
    for file in sources("src").into_iter().chain(sources("tests")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        let justified = text.lines().take(20).any(|l| l.contains("one piece:"));
        if lines > 800 && !justified {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over 800 lines:\n{}",
        long.join("\n")
    );
}
