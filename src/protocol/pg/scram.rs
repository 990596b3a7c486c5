//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, used to check
//! a client's password without it crossing the wire.
//!
//! The client side (tollgate logging in upstream) is `postgres_protocol`'s, the one
//! tokio-postgres uses.

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::num::NonZeroU32;

pub const MECHANISM: &str = "SCRAM-SHA-256";
const ITERATIONS: u32 = 4096;
const NONCE_LEN: usize = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("wrong password")]
    WrongProof,
}

/// What the server keeps of a password: salt, iteration count and the two derived keys.
pub struct Verifier {
    salt: [u8; 16],
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    /// Derives the verifier from a password with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = [0u8; 16];
        fill_random(&mut salt);
        Verifier::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: [u8; 16], iterations: u32) -> Verifier {
        // SASLprep as PostgreSQL does: a password it cannot normalise is used as raw bytes.
        let prepped = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
            &salt,
            prepped.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let server_key = hmac::sign(&key, b"Server Key");
        let mut v = Verifier {
            salt,
            iterations,
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        v.stored_key
            .copy_from_slice(digest::digest(&digest::SHA256, client_key.as_ref()).as_ref());
        v.server_key.copy_from_slice(server_key.as_ref());
        v
    }
}

fn fill_random(buf: &mut [u8]) {
    use rand::SecureRandom;
    // The system RNG failing is not recoverable; PostgreSQL aborts the same way.
    rand::SystemRandom::new()
        .fill(buf)
        .expect("system random number generator failed");
}

/// One exchange, between the server-first and the client-final message.
pub struct Exchange<'v> {
    verifier: &'v Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Reads the client-first message and returns the server-first message to send.
pub fn server_first<'v>(
    verifier: &'v Verifier,
    client_first: &[u8],
) -> Result<(Exchange<'v>, Vec<u8>), ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header: "n,," (no channel binding) or "y,," (client could, thinks we cannot).
    // "p=..." asks for channel binding, which tollgate does not advertise.
    let rest = match text.as_bytes().first() {
        Some(b'n') | Some(b'y') => &text[1..],
        Some(b'p') => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad gs2 header")),
    };
    let rest = rest
        .strip_prefix(',')
        .ok_or(ScramError::Malformed("bad gs2 header"))?;
    // Optional authzid, then the bare message.
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("bad gs2 header"))?;
    if !authzid.is_empty() {
        return Err(ScramError::Malformed("authzid is not supported"));
    }
    let mut parts = bare.split(',');
    let user = parts.next().unwrap_or_default();
    if !user.starts_with("n=") {
        return Err(ScramError::Malformed("missing user name"));
    }
    let client_nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .ok_or(ScramError::Malformed("missing nonce"))?;
    if client_nonce.is_empty()
        || !client_nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("bad nonce"));
    }
    let mut random = [0u8; NONCE_LEN];
    fill_random(&mut random);
    let nonce = format!("{client_nonce}{}", B64.encode(random));
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(verifier.salt),
        verifier.iterations
    );
    let reply = server_first.clone().into_bytes();
    Ok((
        Exchange {
            verifier,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        },
        reply,
    ))
}

impl Exchange<'_> {
    /// Checks the client-final message; on success returns the server-final message.
    pub fn server_final(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding"))?;
        // "biws" is base64("n,,"), "eSws" is base64("y,,").
        if binding != "biws" && binding != "eSws" {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let stored = hmac::Key::new(hmac::HMAC_SHA256, &self.verifier.stored_key);
        let signature = hmac::sign(&stored, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = digest::digest(&digest::SHA256, &client_key);
        constant_time::verify_slices_are_equal(computed.as_ref(), &self.verifier.stored_key)
            .map_err(|_| ScramError::WrongProof)?;
        let server = hmac::Key::new(hmac::HMAC_SHA256, &self.verifier.server_key);
        let server_signature = hmac::sign(&server, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature.as_ref())).into_bytes())
    }
}

/// Compares a cleartext password in constant time (digests first, so not even the length
/// leaks through timing).
pub fn password_matches(given: &str, expected: &str) -> bool {
    let a = digest::digest(&digest::SHA256, given.as_bytes());
    let b = digest::digest(&digest::SHA256, expected.as_bytes());
    constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// tokio-postgres's client against our server, both outcomes.
    fn run(server_password: &str, client_password: &str) -> Result<(), ScramError> {
        let verifier = Verifier::new(server_password);
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unrequested());
        let (exchange, first) = server_first(&verifier, client.message())?;
        client.update(&first).unwrap();
        let last = exchange.server_final(client.message())?;
        client
            .finish(&last)
            .expect("client accepts the server signature");
        Ok(())
    }

    #[test]
    fn postgres_protocol_client_authenticates() {
        assert_eq!(run("correct horse", "correct horse"), Ok(()));
        assert_eq!(run("ｐａｓｓ", "ｐａｓｓ"), Ok(()));
        assert_eq!(run("correct horse", "wrong"), Err(ScramError::WrongProof));
    }

    /// RFC 7677 section 3 test vector (user "user", password "pencil").
    #[test]
    fn rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::with_salt("pencil", salt.try_into().unwrap(), 4096);
        let exchange = Exchange {
            verifier: &verifier,
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let last = exchange
            .server_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            last,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn malformed_client_messages_are_refused() {
        let verifier = Verifier::new("pw");
        for bad in [
            &b""[..],
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,a=someone,n=,r=abc",
            b"n,,n=,r=",
            b"n,,r=abc",
            b"\xff",
        ] {
            assert!(server_first(&verifier, bad).is_err(), "{bad:?}");
        }
        let (exchange, _) = server_first(&verifier, b"n,,n=,r=abc").unwrap();
        assert!(exchange.server_final(b"c=biws,r=abc,p=AAAA").is_err());
    }

    #[test]
    fn cleartext_comparison() {
        assert!(password_matches("a", "a"));
        assert!(!password_matches("a", "b"));
        assert!(!password_matches("a", "ab"));
    }
}
