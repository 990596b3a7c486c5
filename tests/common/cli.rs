//! Helpers for the tests that run the `tollgate` binary (tests/cli*.rs).

use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Connects once the spawned tollgate accepts connections (within 10 s).
pub async fn connect_when_up(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_postgres::connect(url, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("tollgate did not come up: {e}"),
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn assert_no_pan(text: &[u8], what: &str) {
    let found = tollgate::mask::pan::find_all(text);
    assert!(
        found.is_empty(),
        "clear PANs in {what}: {:?}",
        found
            .iter()
            .map(|f| String::from_utf8_lossy(&text[f.range.clone()]).into_owned())
            .collect::<Vec<_>>()
    );
}

/// Writes `signing.pem` in `dir` with `tollgate audit keygen`; returns the public key.
pub fn keygen(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["audit", "keygen", "--out"])
        .arg(dir.join("signing.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn tollgate_cmd(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg(config)
        .env("USER", "auditor-alice")
        .output()
        .unwrap()
}

pub fn sigterm(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("tollgate did not stop on SIGTERM");
}

pub fn audited_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ postgres: 127.0.0.1:{port} }}
shutdown_grace: 1s
audit:
  sqlite: audit.db
  signing_key: {{ file: signing.pem }}
  checkpoint_interval: 1s
  chain: cli-test
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: {{ method: scram-sha-256, groups: [ai-agents], password: {{ env: TOLLGATE_AGENT_PASSWORD }} }}
"
        ),
    )
    .unwrap();
    config
}

pub fn serve(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("TOLLGATE_AGENT_PASSWORD", "pw")
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap()
}
