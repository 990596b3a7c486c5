//! Where a secret lives (an environment variable or a file), never the secret itself.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret lives. Never the secret itself.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Secret {
    /// An environment variable of the tollgate process.
    Env(String),
    /// A file whose whole content (trailing newline removed) is the secret; re-read each use.
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "Secret::Env({name})"),
            Secret::File(path) => write!(f, "Secret::File({})", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Secret {
    /// Reads a binary secret (a key file's exact bytes, or the variable's text).
    pub fn read_bytes(&self) -> Result<Vec<u8>, SecretError> {
        match self {
            Secret::Env(_) => self.read().map(String::into_bytes),
            Secret::File(path) => std::fs::read(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Reads the secret now. The value is never logged by tollgate.
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))
            }
            Secret::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(text.trim_end_matches(['\r', '\n']).to_owned())
            }
        }
    }
}
