//! Unit tests of `messages`.

use super::*;
use crate::protocol::pg::frame::{Message, message_len};

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put_message(&mut v, tag, body);
    v
}

#[test]
fn startup_round_trip() {
    let packet = encode_startup(&[("user", "agent"), ("database", "app")]);
    assert_eq!(
        decode_startup(&packet).unwrap(),
        StartupRequest::Startup {
            minor: 0,
            params: vec![("user", "agent"), ("database", "app")]
        }
    );
    let ssl = encode_request(SSL_REQUEST, &[]);
    assert_eq!(decode_startup(&ssl).unwrap(), StartupRequest::Ssl);
    let cancel = encode_request(CANCEL_REQUEST, &[7, -9]);
    assert_eq!(
        decode_startup(&cancel).unwrap(),
        StartupRequest::Cancel {
            process_id: 7,
            secret_key: -9
        }
    );
}

#[test]
fn malformed_startup_packets_are_errors() {
    let cases: &[&[u8]] = &[
        b"\0\0\0\x08\0\x02\0\0",                 // protocol 2.0
        b"\0\0\0\x0c\0\x03\0\0user",             // unterminated key
        b"\0\0\0\x0e\0\x03\0\0user\0x\0",        // no final NUL
        b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\x01", // cancel missing secret
        b"\0\0\0\x09\x04\xd2\x16\x2fZ",          // SSLRequest with a trailing byte
    ];
    for case in cases {
        assert!(decode_startup(case).is_err(), "{case:?}");
    }
}

/// Every frontend message tollgate decodes, from wire bytes built by hand.
#[test]
fn frontend_messages_decode() {
    let mut bind = b"p1\0s1\0\0\x01\0\x01\0\x02\0\0\0\x02hi\xff\xff\xff\xff\0\x01\0\x01".to_vec();
    let Frontend::Bind {
        portal,
        statement,
        params,
        param_formats,
        result_formats,
    } = decode_frontend(b'B', &bind).unwrap()
    else {
        panic!("not a Bind")
    };
    assert_eq!((portal, statement), ("p1", "s1"));
    assert_eq!(
        params.iter().collect::<Vec<_>>(),
        vec![Some(&b"hi"[..]), None]
    );
    assert_eq!(params.len(), 2);
    assert_eq!(param_formats.iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!((param_formats.of(0), param_formats.of(1)), (1, 1));
    assert_eq!(result_formats.len(), 1);
    bind.push(0);
    assert!(decode_frontend(b'B', &bind).is_err(), "trailing byte");

    let cases: Vec<(u8, &[u8], Frontend)> = vec![
        (b'Q', b"select 1\0", Frontend::Query { sql: "select 1" }),
        (
            b'P',
            b"s\0select $1\0\0\x01\0\0\0\x17",
            Frontend::Parse {
                statement: "s",
                sql: "select $1",
                param_types: 1,
            },
        ),
        (
            b'D',
            b"Pp\0",
            Frontend::Describe {
                target: Target::Portal,
                name: "p",
            },
        ),
        (
            b'E',
            b"\0\0\0\0\x05",
            Frontend::Execute {
                portal: "",
                max_rows: 5,
            },
        ),
        (
            b'C',
            b"Ss\0",
            Frontend::Close {
                target: Target::Statement,
                name: "s",
            },
        ),
        (b'S', b"", Frontend::Sync),
        (b'H', b"", Frontend::Flush),
        (b'X', b"", Frontend::Terminate),
        (b'c', b"", Frontend::CopyDone),
        (b'd', b"1\t2\n", Frontend::CopyData(b"1\t2\n")),
        (b'f', b"stop\0", Frontend::CopyFail { message: "stop" }),
    ];
    for (tag, body, expected) in cases {
        assert_eq!(
            decode_frontend(tag, body).unwrap(),
            expected,
            "{}",
            tag as char
        );
    }
}

#[test]
fn function_call_decodes() {
    let Frontend::FunctionCall {
        function_oid, args, ..
    } = decode_frontend(b'F', b"\0\0\x04\x00\0\0\0\x01\0\0\0\x01x\0\0").unwrap()
    else {
        panic!("not a FunctionCall")
    };
    assert_eq!(function_oid, 1024);
    assert_eq!(args.iter().collect::<Vec<_>>(), vec![Some(&b"x"[..])]);
}

#[test]
fn malformed_frontend_messages_are_errors() {
    let cases: &[(u8, &[u8])] = &[
        (b'Q', b"select 1"),                       // no NUL
        (b'Q', b"\xff\xfe\0"),                     // not UTF-8
        (b'P', b"s\0select\0\xff\xff"),            // negative param count
        (b'P', b"s\0select\0\0\x02\0\0\0\x17"),    // 2 types announced, 1 sent
        (b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe"), // length -2
        (b'B', b"\0\0\0\0\0\x01\0\0\0\x09ab\0\0"), // value longer than body
        (b'B', b"\0\0\0\x01\0\x07\0\0\0\0"),       // format code 7
        (b'D', b"Xname\0"),                        // neither S nor P
        (b'E', b"p\0\0\0"),                        // short max_rows
        (b'S', b"x"),                              // Sync with a body
        (b'F', b"\0\0\x04\0\0\0\0\0\0\x02"),       // missing result format
        (b'?', b""),                               // unknown type
    ];
    for (tag, body) in cases {
        assert!(
            decode_frontend(*tag, body).is_err(),
            "{} {body:?}",
            *tag as char
        );
    }
}

#[test]
fn error_response_round_trip() {
    let mut out = Vec::new();
    put_error(&mut out, Severity::Fatal, "08P01", "bad frame");
    let n = message_len(&out, 1 << 20).unwrap().unwrap();
    let m = Message::from_frame(&out[..n]);
    let Backend::ErrorResponse(f) = decode_backend(m.tag, m.body).unwrap() else {
        panic!("not an error")
    };
    assert_eq!(f.get(b'S'), Some("FATAL"));
    assert_eq!(f.get(b'C'), Some("08P01"));
    assert_eq!(f.get(b'M'), Some("bad frame"));
}

#[test]
fn backend_messages_decode() {
    let cases: Vec<(Vec<u8>, Backend)> = vec![
        (
            frame(b'R', b"\0\0\0\x05salt"),
            Backend::Authentication {
                code: 5,
                data: b"salt",
            },
        ),
        (
            frame(b'K', b"\0\0\0\x01\0\0\0\x02"),
            Backend::BackendKeyData {
                process_id: 1,
                secret_key: 2,
            },
        ),
        (
            frame(b'Z', b"T"),
            Backend::ReadyForQuery(TxStatus::InTransaction),
        ),
        (
            frame(b'S', b"TimeZone\0UTC\0"),
            Backend::ParameterStatus {
                name: "TimeZone",
                value: "UTC",
            },
        ),
        (frame(b'D', b"\0\x01\0\0\0\x011"), Backend::Other),
    ];
    for (wire, expected) in cases {
        let m = Message::from_frame(&wire);
        assert_eq!(decode_backend(m.tag, m.body).unwrap(), expected);
    }
    assert!(decode_backend(b'Z', b"Q").is_err());
    assert!(decode_backend(b'K', b"\0\0\0\x01").is_err());
}

#[test]
fn sasl_initial_round_trip() {
    let mut out = Vec::new();
    put_sasl_initial(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
    let m = Message::from_frame(&out);
    assert_eq!(
        decode_sasl_initial(m.body).unwrap(),
        ("SCRAM-SHA-256", &b"n,,n=,r=abc"[..])
    );
}
