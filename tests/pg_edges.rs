//! What real drivers rarely do: malformed and oversize frames, connection limits, slow
//! startups, TLS on both sides, every upstream login method, refused startup parameters,
//! FunctionCall, and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, Raw, error_field, frame, sqlstate, startup_packet};
use tokio_postgres::NoTls;
use tollgate::pipeline::Stages;

/// Reads until the connection closes; returns the FATAL error's SQLSTATE if one came.
async fn fatal_then_eof(raw: &mut Raw) -> Option<String> {
    let mut code = None;
    while let Some((tag, body)) = raw.read().await {
        if tag == b'E' {
            assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"));
            code = error_field(&body, b'C');
        }
    }
    code
}

#[tokio::test]
async fn malformed_frames_get_a_fatal_error_and_spare_other_connections() {
    let proxy = Proxy::start("limits: { max_client_frame: 65536 }").await;
    let healthy = proxy.connect().await;
    let busy = tokio::spawn({
        let url = proxy.url("test");
        async move {
            let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(conn);
            for i in 0..200i32 {
                let r = c.query_one("select $1::int4", &[&i]).await.unwrap();
                assert_eq!(r.get::<_, i32>(0), i);
            }
        }
    });
    let mut oversize = frame(b'Q', b"select 1\0");
    oversize[1..5].copy_from_slice(&(70_000i32).to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 0", b"B\0\0\0\0".to_vec()),
        ("length 3", b"Q\0\0\0\x03".to_vec()),
        ("negative length", b"P\xff\xff\xff\xf0".to_vec()),
        ("oversize", oversize),
        ("unknown type", frame(b'?', b"")),
        ("query without NUL", frame(b'Q', b"select 1")),
        (
            "bind value past the end",
            frame(b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0"),
        ),
        ("bind negative count", frame(b'B', b"\0\0\xff\xff")),
        (
            "parse param count lies",
            frame(b'P', b"s\0select 1\0\0\x09"),
        ),
        ("sync with a body", frame(b'S', b"x")),
        ("describe of what", frame(b'D', b"Zname\0")),
        ("password after login", frame(b'p', b"again\0")),
        ("invalid UTF-8", frame(b'Q', b"select '\xff\xfe'\0")),
    ];
    for (name, bytes) in cases {
        let mut raw = Raw::login(proxy.addr).await;
        raw.send(&bytes).await;
        assert_eq!(
            fatal_then_eof(&mut raw).await.as_deref(),
            Some("08P01"),
            "{name}"
        );
    }
    // Garbage before any startup packet.
    for bytes in [
        &b"\0\0\0\x02"[..],
        b"\x7f\xff\xff\xff",
        b"\0\0\0\x08\0\x02\0\0",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(bytes).await;
        assert_eq!(
            fatal_then_eof(&mut raw).await.as_deref(),
            Some("08P01"),
            "{bytes:?}"
        );
    }
    busy.await.unwrap();
    assert_eq!(
        healthy
            .query_one("select 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test]
async fn frames_split_at_every_byte_still_work() {
    let proxy = Proxy::start("").await;
    let mut raw = Raw::login(proxy.addr).await;
    let mut wire = frame(b'P', b"\0select $1::text || 'x'\0\0\0");
    wire.extend(frame(b'B', b"\0\0\0\0\0\x01\0\0\0\x02ab\0\0"));
    wire.extend(frame(b'E', b"\0\0\0\0\0"));
    wire.extend(frame(b'S', b""));
    for byte in &wire {
        raw.send(std::slice::from_ref(byte)).await;
        tokio::task::yield_now().await;
    }
    let seen = raw.until_ready().await;
    let tags: Vec<u8> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"12DC");
    assert_eq!(seen[2].1, b"\0\x01\0\0\0\x03abx");
}

#[tokio::test]
async fn function_call_is_relayed() {
    let proxy = Proxy::start("").await;
    let mut raw = Raw::login(proxy.addr).await;
    // FunctionCall of int4pl (OID 177) with 2 and 40 in binary.
    let mut body = 177i32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 1, 0, 2]);
    for v in [2i32, 40] {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&[0, 1]);
    raw.send(&frame(b'F', &body)).await;
    let seen = raw.until_ready().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, b'V');
    assert_eq!(&seen[0].1[4..], &42i32.to_be_bytes());
}

#[tokio::test]
async fn connection_limits_per_client_and_total() {
    let proxy = Proxy::start("limits: { max_connections_per_client: 2 }").await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let err = tokio_postgres::connect(&proxy.url("test"), NoTls)
        .await
        .err()
        .expect("third refused");
    assert_eq!(sqlstate(&err), "53300");
    drop(a);
    // The slot frees once tollgate sees the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_postgres::connect(&proxy.url("test"), NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                assert_eq!(
                    c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
                    1
                );
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
    assert_eq!(
        b.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );

    let proxy = Proxy::start("limits: { max_connections: 1 }").await;
    let _only = proxy.connect().await;
    let err = tokio_postgres::connect(&proxy.url("test"), NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(sqlstate(&err), "53300");
}

/// Issue #19, item 8: a login that stalls past `startup_timeout` is told why (FATAL 08P01
/// naming the timeout, as PostgreSQL does), then closed: silent, half a startup packet, and
/// silent when asked for its password.
#[tokio::test]
async fn startup_timeout_cuts_silent_and_slow_clients() {
    let proxy = Proxy::start("limits: { startup_timeout: 500ms }").await;
    let started = Instant::now();
    let mut silent = Raw::connect(proxy.addr).await;
    let mut slow = Raw::connect(proxy.addr).await;
    slow.send(&startup_packet(&[("user", "agent"), ("database", "plain")])[..6])
        .await;
    let mut mute = Raw::connect(proxy.addr).await;
    mute.send(&startup_packet(&[("user", "agent"), ("database", "plain")]))
        .await;
    assert_eq!(mute.read().await.unwrap().0, b'R', "asked for a password");
    for raw in [&mut silent, &mut slow, &mut mute] {
        let (tag, body) = raw.read().await.expect("told why");
        assert_eq!(tag, b'E');
        assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"));
        assert_eq!(error_field(&body, b'C').as_deref(), Some("08P01"));
        assert_eq!(
            error_field(&body, b'M').as_deref(),
            Some("tollgate: the login did not finish within startup_timeout (500ms)")
        );
        assert!(raw.read().await.is_none(), "then closed");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The daemon serves a prompt login meanwhile.
    let mut prompt = Raw::login(proxy.addr).await;
    prompt.send(&frame(b'Q', b"select 1\0")).await;
    assert!(prompt.until_ready().await.iter().any(|(t, _)| *t == b'D'));
}

#[tokio::test]
async fn startup_refusals_have_their_sqlstate() {
    let proxy = Proxy::start("").await;
    let port = proxy.addr.port();
    let cases = [
        (
            format!("host=127.0.0.1 port={port} user=agent password=nope dbname=test"),
            "28P01",
        ),
        (
            format!("host=127.0.0.1 port={port} user=other password=agent-secret dbname=test"),
            "28P01",
        ),
        (
            format!("host=127.0.0.1 port={port} user=agent password=agent-secret dbname=nosuch"),
            "3D000",
        ),
        (
            format!(
                "host=127.0.0.1 port={port} user=agent password=agent-secret dbname=test options='-c role=pg_read_server_files'"
            ),
            "42501",
        ),
    ];
    for (url, code) in cases {
        let err = tokio_postgres::connect(&url, NoTls)
            .await
            .err()
            .expect(&url);
        assert_eq!(sqlstate(&err), code, "{url}");
    }
    // Replication connections are not relayed.
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&startup_packet(&[
        ("user", "agent"),
        ("database", "plain"),
        ("replication", "database"),
    ]))
    .await;
    assert_eq!(fatal_then_eof(&mut raw).await.as_deref(), Some("08P01"));
}

/// Issue #19, item 1: a client asking for protocol 3.2 (libpq 18 with
/// `max_protocol_version=latest`) is told 3.0, the whole version in the version field as
/// PostgreSQL sends it (libpq 18 refuses anything under 3.0), then logs in and runs a query.
#[tokio::test]
async fn protocol_3_2_is_negotiated_down_to_3_0() {
    let proxy = Proxy::start("").await;
    for options in [&[("_pq_.x", "1")][..], &[]] {
        let mut raw = Raw::connect(proxy.addr).await;
        let mut params = vec![("user", "agent"), ("database", "plain")];
        params.extend_from_slice(options);
        let mut packet = startup_packet(&params);
        packet[4..8].copy_from_slice(&0x0003_0002i32.to_be_bytes());
        raw.send(&packet).await;
        let (tag, body) = raw.read().await.unwrap();
        assert_eq!(tag, b'v');
        assert_eq!(&body[..4], &0x0003_0000i32.to_be_bytes(), "version 3.0");
        assert_eq!(&body[4..8], &(options.len() as i32).to_be_bytes());
        let names: Vec<u8> = options
            .iter()
            .flat_map(|(k, _)| [k.as_bytes(), b"\0"].concat())
            .collect();
        assert_eq!(&body[8..], &names[..]);
        let (tag, body) = raw.read().await.unwrap();
        assert_eq!((tag, &body[..]), (b'R', &3i32.to_be_bytes()[..]));
        raw.send(&frame(
            b'p',
            format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
        ))
        .await;
        raw.until_ready().await;
        raw.send(&frame(b'Q', b"select 'three-oh'\0")).await;
        let answer = raw.until_ready().await;
        let row = answer.iter().find(|(t, _)| *t == b'D').expect("a row");
        assert!(row.1.ends_with(b"three-oh"), "{answer:?}");
    }
}

/// Writes a self-signed certificate for "localhost" and its key; returns their paths.
fn self_signed(proxy_dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = proxy_dir.join("server.crt");
    let key = proxy_dir.join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

async fn psql(args: &[&str], password: &str) -> std::process::Output {
    tokio::process::Command::new("psql")
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql runs")
}

#[tokio::test]
async fn client_tls_with_psql_verify_full_and_require() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let yaml = format!(
        "tls: {{ cert: {}, key: {}, require: true }}\n{}",
        cert.display(),
        key.display(),
        common::targets(dir.path())
    );
    let proxy = Proxy::start_yaml(dir, &yaml, Stages::default()).await;
    let port = proxy.addr.port().to_string();
    let url = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=agent dbname=test sslmode=verify-full sslrootcert={}",
        cert.display()
    );
    let out = psql(&[&url, "-Atc", "select 'over tls'"], common::AGENT_PASSWORD).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
    // The cleartext-password target too: the password travels inside TLS.
    let url = url.replace("dbname=test", "dbname=plain");
    let out = psql(&[&url, "-Atc", "select 2"], common::AGENT_PASSWORD).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // require: a plaintext client is refused.
    let plain = format!("host=127.0.0.1 port={port} user=agent dbname=test sslmode=disable");
    let out = psql(&[&plain, "-Atc", "select 1"], common::AGENT_PASSWORD).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires an encrypted connection"));
}

/// A TLS client to tollgate that trusts `cert` and offers `alpn`, over `tcp`.
async fn tls_to(
    tcp: tokio::net::TcpStream,
    cert: &std::path::Path,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// The next message from a stream, or `None` at its end.
async fn next_message(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("no answer within 10 s");
    read.ok()?;
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

/// Logs in to the `plain` target over `tls` and returns the row of a query naming whether
/// tollgate's own upstream connection is TLS.
async fn tls_login(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let startup = startup_packet(&[("user", "agent"), ("database", "plain")]);
    tls.write_all(&startup).await.unwrap();
    let (tag, body) = next_message(tls).await.expect("auth request");
    assert_eq!((tag, &body[..]), (b'R', &3i32.to_be_bytes()[..]));
    let password = frame(b'p', format!("{}\0", common::AGENT_PASSWORD).as_bytes());
    tls.write_all(&password).await.unwrap();
    while next_message(tls).await.expect("login").0 != b'Z' {}
    let query = b"select 'direct ' || ssl::text from pg_stat_ssl where pid = pg_backend_pid()\0";
    tls.write_all(&frame(b'Q', query)).await.unwrap();
    let mut row = None;
    loop {
        let (tag, body) = next_message(tls).await.expect("answer");
        match tag {
            b'D' => row = Some(String::from_utf8_lossy(&body[6..]).into_owned()),
            b'E' => panic!("{:?}", error_field(&body, b'M')),
            b'Z' => return row,
            _ => {}
        }
    }
}

/// Issue #19, item 2: direct TLS (`sslnegotiation=direct`, PostgreSQL 17 clients): a TLS
/// ClientHello as the first bytes is accepted when it offers ALPN `postgresql`, and refused
/// without it (FATAL 08P01 inside TLS, PostgreSQL 17's words) or with only other names (the
/// handshake fails). SSLRequest-negotiated TLS without ALPN still works, as psql 15 uses it.
#[tokio::test]
async fn direct_tls_needs_alpn_postgresql() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let yaml = format!(
        "tls: {{ cert: {}, key: {}, require: true }}\n{}",
        cert.display(),
        key.display(),
        common::targets(dir.path())
    );
    let proxy = Proxy::start_yaml(dir, &yaml, Stages::default()).await;
    let tcp = || tokio::net::TcpStream::connect(proxy.addr);
    // ALPN postgresql: the handshake is accepted and the session runs (require: true is met).
    let mut direct = tls_to(tcp().await.unwrap(), &cert, &[b"postgresql"])
        .await
        .expect("handshake accepted");
    assert_eq!(direct.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    // tollgate's upstream connection is plaintext on loopback: the row says so.
    assert_eq!(
        tls_login(&mut direct).await.as_deref(),
        Some("direct false")
    );
    // No ALPN: refused inside TLS, then closed.
    let mut bare = tls_to(tcp().await.unwrap(), &cert, &[]).await.unwrap();
    bare.write_all(&startup_packet(&[("user", "agent"), ("database", "plain")]))
        .await
        .unwrap();
    let (tag, body) = next_message(&mut bare).await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"));
    assert_eq!(error_field(&body, b'C').as_deref(), Some("08P01"));
    assert!(
        error_field(&body, b'M')
            .unwrap()
            .contains("without ALPN protocol negotiation extension")
    );
    assert!(next_message(&mut bare).await.is_none());
    // Only another protocol's name: the handshake itself fails.
    assert!(
        tls_to(tcp().await.unwrap(), &cert, &[b"h2"]).await.is_err(),
        "handshake refused"
    );
    // SSLRequest, then TLS without ALPN: today's clients keep working.
    let mut plain = tcp().await.unwrap();
    plain
        .write_all(&tollgate::protocol::pg::messages::encode_request(
            tollgate::protocol::pg::messages::SSL_REQUEST,
            &[],
        ))
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut plain, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"S");
    let mut negotiated = tls_to(plain, &cert, &[]).await.unwrap();
    assert_eq!(
        tls_login(&mut negotiated).await.as_deref(),
        Some("direct false")
    );
}

/// The local server's own certificate (Debian's snakeoil, self-signed for localhost).
async fn server_cert() -> String {
    let (c, conn) = tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query_one("show ssl_cert_file", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn upstream_tls_modes() {
    let ca = server_cert().await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = common::targets(dir.path());
    let pw = dir.path().join("agent-password");
    for (name, tls) in [
        ("tls_require", "{ mode: require }".to_string()),
        (
            "tls_verify",
            format!("{{ mode: verify-full, ca_file: {ca}, server_name: localhost }}"),
        ),
        (
            "tls_wrong_name",
            format!("{{ mode: verify-full, ca_file: {ca}, server_name: db.example }}"),
        ),
    ] {
        yaml.push_str(&format!(
            "
  - name: {name}
    address: 127.0.0.1:5432
    database: test
    user: postgres
    tls: {tls}
    client_auth: {{ method: scram-sha-256, password: {{ file: {} }} }}
",
            pw.display()
        ));
    }
    let proxy = Proxy::start_yaml(dir, &yaml, Stages::default()).await;
    let port = proxy.addr.port();
    for db in ["tls_require", "tls_verify"] {
        let url =
            format!("host=127.0.0.1 port={port} user=agent password=agent-secret dbname={db}");
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.expect(db);
        tokio::spawn(conn);
        let ssl: bool = c
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{db}: the upstream connection is encrypted");
    }
    let url = format!(
        "host=127.0.0.1 port={port} user=agent password=agent-secret dbname=tls_wrong_name"
    );
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("name mismatch refused");
    assert_eq!(sqlstate(&err), "08006");
}

#[tokio::test]
async fn upstream_logins_with_scram_md5_and_cleartext() {
    // Roles and pg_hba.conf lines made by scripts/setup-postgres.sh.
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = common::targets(dir.path());
    let agent_pw = dir.path().join("agent-password");
    let weak = "\n    upstream_auth: [scram-sha-256, md5, password]";
    let targets = [
        ("tollgate_scram", "tollgate_scram", "scram-upstream-pw", ""),
        ("tollgate_md5", "tollgate_md5", "md5-upstream-pw", weak),
        (
            "tollgate_password",
            "tollgate_password",
            "cleartext-upstream-pw",
            weak,
        ),
        (
            "wrong_upstream_password",
            "tollgate_scram",
            "not-the-password",
            "",
        ),
        // Weak exchanges are refused unless the target lists them.
        ("md5_not_allowed", "tollgate_md5", "md5-upstream-pw", ""),
        (
            "cleartext_not_allowed",
            "tollgate_password",
            "cleartext-upstream-pw",
            "",
        ),
    ];
    for (name, role, password, upstream_auth) in targets {
        let file = dir.path().join(name);
        std::fs::write(&file, password).unwrap();
        yaml.push_str(&format!(
            "
  - name: {name}
    address: 127.0.0.1:5432
    database: test
    user: {role}
    password: {{ file: {} }}{upstream_auth}
    client_auth: {{ method: scram-sha-256, password: {{ file: {} }} }}
",
            file.display(),
            agent_pw.display()
        ));
    }
    let proxy = Proxy::start_yaml(dir, &yaml, Stages::default()).await;
    let port = proxy.addr.port();
    let url = |db: &str| {
        format!("host=127.0.0.1 port={port} user=agent password=agent-secret dbname={db}")
    };
    for role in ["tollgate_scram", "tollgate_md5", "tollgate_password"] {
        let (c, conn) = tokio_postgres::connect(&url(role), NoTls)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e} (has scripts/setup-postgres.sh run?)"));
        tokio::spawn(conn);
        let who: String = c
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, role);
    }
    for db in [
        "md5_not_allowed",
        "cleartext_not_allowed",
        "wrong_upstream_password",
    ] {
        let err = tokio_postgres::connect(&url(db), NoTls)
            .await
            .err()
            .expect(db);
        assert_eq!(sqlstate(&err), "08006", "{db}");
        // The client is not told the upstream role or why it failed.
        let msg = err.as_db_error().unwrap().message().to_owned();
        assert!(
            !msg.contains("tollgate_") && !msg.contains("password"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn shutdown_lets_running_statements_finish_then_closes() {
    let mut proxy = Proxy::start("shutdown_grace: 10s").await;
    let client = proxy.connect().await;
    let idle = proxy.connect().await;
    let running = tokio::spawn(async move {
        let r = client
            .query_one("select pg_sleep(1)::text || 'done'", &[])
            .await;
        (r.map(|row| row.get::<_, String>(0)), client)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let server = proxy.shutdown();
    // The idle connection is closed at once with 57P01.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = idle.query_one("select 1", &[]).await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err}");
    // New connections are no longer accepted.
    assert!(
        tokio_postgres::connect(&proxy.url("test"), NoTls)
            .await
            .is_err()
    );
    // The running statement completes.
    let (result, client) = running.await.unwrap();
    assert_eq!(result.unwrap(), "done");
    // Then that connection is closed too, and the server finishes well before the grace period.
    server.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(client.query_one("select 1", &[]).await.is_err());
}

#[tokio::test]
async fn shutdown_grace_period_cuts_what_is_left() {
    let mut proxy = Proxy::start("shutdown_grace: 500ms").await;
    let client = proxy.connect().await;
    client.batch_execute("begin").await.unwrap();
    let started = Instant::now();
    proxy.shutdown().await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(client.query_one("select 1", &[]).await.is_err());
}

#[tokio::test]
async fn settings_that_change_how_sql_is_read_end_the_connection() {
    let proxy = Proxy::start("").await;
    // The upstream session is pinned to UTF8 whatever the client asked for.
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&startup_packet(&[
        ("user", "agent"),
        ("database", "plain"),
        ("client_encoding", "SJIS"),
    ]))
    .await;
    raw.read().await.unwrap();
    raw.send(&frame(
        b'p',
        format!("{}\0", common::AGENT_PASSWORD).as_bytes(),
    ))
    .await;
    let greeting = raw.until_ready().await;
    let encoding = greeting
        .iter()
        .find(|(t, b)| *t == b'S' && b.starts_with(b"client_encoding\0"))
        .map(|(_, b)| {
            String::from_utf8_lossy(&b[16..])
                .trim_end_matches('\0')
                .to_owned()
        });
    assert_eq!(encoding.as_deref(), Some("UTF8"));
    for sql in [
        "set client_encoding = 'LATIN1'",
        "set standard_conforming_strings = off",
    ] {
        let client = proxy.connect().await;
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
        assert!(
            client.query_one("select 1", &[]).await.is_err(),
            "{sql}: connection closed"
        );
    }
}

#[tokio::test]
async fn drain_after_copy_in_does_not_wait_for_the_grace_period() {
    use futures_util::SinkExt;
    let mut proxy = Proxy::start("shutdown_grace: 20s").await;
    let client = proxy.connect().await;
    client
        .batch_execute("create temp table c (a int)")
        .await
        .unwrap();
    // tokio-postgres sends Bind, Execute, Sync, then the data: the server ignores that Sync.
    let sink = client.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let started = Instant::now();
    proxy.shutdown().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_sessions_are_closed_but_long_statements_are_not() {
    let proxy = Proxy::start("limits: { idle_timeout: 400ms }").await;
    let busy = proxy.connect().await;
    // A statement running longer than the idle timeout is not idleness.
    let row = busy
        .query_one("select pg_sleep(0.8)::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "");
    let idle = proxy.connect().await;
    idle.query_one("select 1", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let err = idle.query_one("select 1", &[]).await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "57P05", "{err:?}");
}
