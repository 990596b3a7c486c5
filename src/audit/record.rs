//! One record of a chain, its canonical encoding and its hash; checkpoint signatures.
//!
//! A record's **body** is a JSON object whose first fields place it in its chain (`v`,
//! `chain`, `seq`, `prev`), then say what happened (PCI DSS 10.2.2: who, what, when, outcome,
//! from where, on what). Its **hash** is the SHA-256 of the body's exact UTF-8 bytes, written
//! as 64 lowercase hex digits. `prev` is the previous record's hash (64 zeros for a chain's
//! first record), so changing, removing, inserting or reordering any record breaks every
//! later link. The encoding is documented with test vectors in `docs/audit.md`; the tests
//! below pin them.
//!
//! A **checkpoint** signs a chain's head with Ed25519 over
//! `tollgate-checkpoint-v1\n{chain}\n{seq}\n{hash}\n{ts}`; the public key alone verifies it.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The `prev` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The version of the body encoding.
pub const VERSION: u32 = 1;

/// A record's body: what is hashed. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub v: u32,
    pub chain: String,
    pub seq: u64,
    pub prev: String,
    /// UTC, RFC 3339 with microseconds.
    pub ts: String,
    /// The event type (`session_start`, `statement`, `server_frames`…).
    #[serde(rename = "type")]
    pub kind: String,
    /// `success`, `failure`, `refused`, `held` or `info`.
    pub outcome: String,
    pub session: Option<String>,
    /// Who: the token's subject (or `tollgate` for the daemon's own events).
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// The upstream role the session used.
    pub upstream_role: Option<String>,
    /// Where from.
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    /// On what.
    pub target: Option<String>,
    pub database: Option<String>,
    pub tables: Vec<String>,
    /// The event's own fields (a JSON object; keys sorted).
    pub detail: serde_json::Value,
}

impl Body {
    /// The canonical bytes: compact JSON in field order (`detail` keys sorted).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record body always serialises")
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The hash of an encoded body.
pub fn hash(encoded: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, encoded.as_bytes()).as_ref())
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    pub ts: String,
    /// The first 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

fn checkpoint_message(chain: &str, seq: u64, hash: &str, ts: &str) -> String {
    format!("tollgate-checkpoint-v1\n{chain}\n{seq}\n{hash}\n{ts}")
}

/// The short id of a public key.
pub fn key_id(public_key: &[u8]) -> String {
    hash_bytes(public_key)[..16].to_owned()
}

fn hash_bytes(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 PKCS#8 key (PEM \"PRIVATE KEY\" or DER)")]
    Format,
    #[error("not a public key: expected 32 bytes as hex or base64, or a file holding them")]
    Public,
}

/// The checkpoint signer.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
}

impl Signer {
    /// From PKCS#8 (PEM or DER).
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Signer, KeyError> {
        let der = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
                    .map_err(|_| KeyError::Format)?
                    .secret_pkcs8_der()
                    .to_vec()
            }
            _ => bytes.to_vec(),
        };
        let key = Ed25519KeyPair::from_pkcs8(&der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
            .map_err(|_| KeyError::Format)?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Signer { key, key_id })
    }

    /// A new key as PEM (`tollgate audit keygen`, `tollgate dev`).
    pub fn generate_pem() -> String {
        use base64::Engine;
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("system random number generator failed");
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn sign(&self, chain: &str, seq: u64, hash: &str, ts: &str) -> Checkpoint {
        let sig = self
            .key
            .sign(checkpoint_message(chain, seq, hash, ts).as_bytes());
        Checkpoint {
            chain: chain.to_owned(),
            seq,
            hash: hash.to_owned(),
            ts: ts.to_owned(),
            key_id: self.key_id.clone(),
            signature: hex(sig.as_ref()),
        }
    }
}

/// A public key that verifies checkpoints.
#[derive(Debug, Clone)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// From 32 bytes written as hex or base64 (what `tollgate audit keygen` prints).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        use base64::Engine;
        let text = text.trim();
        let bytes = unhex(text)
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or(KeyError::Public)?;
        if bytes.len() != 32 {
            return Err(KeyError::Public);
        }
        Ok(PublicKey(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> PublicKey {
        PublicKey(bytes.to_vec())
    }

    pub fn key_id(&self) -> String {
        key_id(&self.0)
    }

    pub fn base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    /// Whether the checkpoint's signature is this key's over its fields.
    pub fn verifies(&self, c: &Checkpoint) -> bool {
        let Some(sig) = unhex(&c.signature) else {
            return false;
        };
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(
                checkpoint_message(&c.chain, c.seq, &c.hash, &c.ts).as_bytes(),
                &sig,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            v: VERSION,
            chain: "east-1".into(),
            seq: 1,
            prev: GENESIS.into(),
            ts: "2026-11-26T10:00:00.000000Z".into(),
            kind: "session_start".into(),
            outcome: "success".into(),
            session: Some("s-0001".into()),
            subject: Some("ci-agent".into()),
            groups: vec!["ai-agents".into()],
            client_id: None,
            issuer: Some("https://idp.example".into()),
            upstream_role: Some("agent_ro".into()),
            client_addr: Some("10.0.0.7:50122".into()),
            application_name: Some("psql".into()),
            target: Some("payments".into()),
            database: Some("payments".into()),
            tables: vec![],
            detail: serde_json::json!({"tls": true, "auth": "oidc"}),
        }
    }

    /// The test vector in docs/audit.md: change this only together with the document.
    #[test]
    fn canonical_encoding_vector() {
        let encoded = body().encode();
        assert_eq!(
            encoded,
            r#"{"v":1,"chain":"east-1","seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","ts":"2026-11-26T10:00:00.000000Z","type":"session_start","outcome":"success","session":"s-0001","subject":"ci-agent","groups":["ai-agents"],"client_id":null,"issuer":"https://idp.example","upstream_role":"agent_ro","client_addr":"10.0.0.7:50122","application_name":"psql","target":"payments","database":"payments","tables":[],"detail":{"auth":"oidc","tls":true}}"#
        );
        assert_eq!(
            hash(&encoded),
            "e1d8c1e795a6a770df544271db4edbaccd936c67982148d184ef8c8947d340ba"
        );
    }

    #[test]
    fn decode_is_the_inverse() {
        let b = body();
        let back: Body = serde_json::from_str(&b.encode()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn checkpoints_verify_with_the_public_key_only() {
        let signer = Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap();
        let c = signer.sign("east-1", 42, &hash("x"), "2026-11-26T10:00:00.000000Z");
        let public =
            PublicKey::parse(&PublicKey::from_bytes(signer.public_key()).base64()).unwrap();
        assert!(public.verifies(&c));
        assert_eq!(public.key_id(), c.key_id);
        let mut forged = c.clone();
        forged.seq = 41;
        assert!(!public.verifies(&forged));
        let other = Signer::from_pkcs8(Signer::generate_pem().as_bytes()).unwrap();
        assert!(!PublicKey::from_bytes(other.public_key()).verifies(&c));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
