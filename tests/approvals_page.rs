//! The approvals page in headless Chromium (Debian's chromium and chromium-driver): an approver
//! signs in through the OIDC code flow (the dev issuer), sees the held statement, clicks
//! Approve, and the agent's waiting query completes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_postgres::NoTls;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal W3C WebDriver client over HTTP.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    _driver: std::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) is installed");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            match http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
            {
                Ok(r) => {
                    let v: Value = r.json().await.unwrap();
                    break v["value"]["sessionId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no browser session: {v}"))
                        .to_owned();
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("chromedriver did not start: {e}"),
            }
        };
        Browser {
            http,
            base,
            session,
            _driver: driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method.clone(), url);
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let r = request.send().await.unwrap();
        r.json::<Value>().await.unwrap()["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn source(&self) -> String {
        let v = self
            .call(reqwest::Method::GET, "/source", Value::Null)
            .await;
        match v.as_str() {
            Some(s) => s.to_owned(),
            None => v.to_string(),
        }
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The element `css` selects, waiting up to 10 s for it.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            if let Some(id) = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
            {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on the page: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self._driver.kill();
    }
}

#[tokio::test]
async fn an_approver_signs_in_and_approves_in_the_browser() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (pg_port, admin_port) = (free_port(), free_port());
    let mut dev = tokio::process::Command::new(BIN)
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path().join("dev"))
        .args(["--listen", &format!("127.0.0.1:{pg_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let token = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("banner within 20 s")
            .unwrap()
            .expect("banner");
        if let Some(rest) = line.trim().strip_prefix("PGPASSWORD='") {
            break rest.split('\'').next().unwrap().to_owned();
        }
    };
    let signin_code = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("banner within 20 s")
            .unwrap()
            .expect("banner");
        if let Some((_, rest)) = line.split_once("sign-in code ") {
            break rest.split(')').next().unwrap().to_owned();
        }
    };
    let table = format!("tollgate_page_{}", std::process::id());
    let (direct, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    direct
        .batch_execute(&format!(
            "drop table if exists {table}; create table {table} (v int)"
        ))
        .await
        .unwrap();
    let url = format!(
        "host=127.0.0.1 port={pg_port} user=dev-agent password={token} dbname=test sslmode=disable"
    );
    let (agent, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let held = tokio::spawn({
        let sql = format!("/* reason: INC-42 the page shows it */ insert into {table} values (42)");
        async move { agent.execute(sql.as_str(), &[]).await }
    });

    // Without a session the page sends the browser to sign in; the dev issuer's form, given
    // the sign-in code the banner printed, signs it in as dev-approver (group dba) through the
    // code flow.
    let page = format!("http://127.0.0.1:{admin_port}/approvals/ui");
    let browser = Browser::start().await;
    browser.go(&page).await;
    browser.type_into("#signin-code", &signin_code).await;
    browser.click("#sign-in").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let source = browser.source().await;
        if source.contains(&format!("insert into {table}")) {
            assert!(
                source.contains("Signed in as <b>dev-approver</b>"),
                "{source}"
            );
            // The agent's stated reason and the impact line, next to the statement.
            assert!(
                source.contains("Reason: INC-42 the page shows it")
                    && source.contains("Impact: no preview: only UPDATE"),
                "{source}"
            );
            break;
        }
        let at = browser
            .call(reqwest::Method::GET, "/url", Value::Null)
            .await;
        assert!(
            Instant::now() < deadline,
            "the held statement never showed at {at}: {source}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.go(&page).await;
    }
    browser.click("button.approve").await;
    let n = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the query completes once approved")
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    let source = browser.source().await;
    assert!(source.contains("approved"), "{source}");

    // A form posted without the session's CSRF token is refused; without a session, the
    // browser is sent to sign in.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("http://127.0.0.1:{admin_port}/approvals/ui/decide"))
        .form(&[("id", "ap_x"), ("csrf", "forged"), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/approvals/login");
    direct
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    dev.kill().await.unwrap();
}
