//! What `aimon serve` is told: where to listen, who may call it, TLS and limits.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Scope;

/// The default listen address: loopback, so a server started without tokens is reachable only
/// from this machine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8428";

/// The server's configuration. `Default` is a loopback server without tokens, TLS or CORS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Bearer tokens and their scopes. None: every route is open, which the server allows
    /// only on a loopback address.
    pub tokens: Vec<TokenConfig>,
    /// TLS certificate and key (PEM); none: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Origins allowed to call the API from a browser (CORS); none: CORS is off.
    pub cors_origins: Vec<String>,
    /// Sizes and times the server accepts.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            tokens: Vec::new(),
            tls: None,
            cors_origins: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// One bearer token.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and the request metrics; never the secret.
    pub name: String,
    /// The token itself, as clients send it after `Bearer `.
    pub secret: String,
    /// What the token may do; `admin` implies `write`, which implies `read`.
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for TokenConfig {
    /// The secret is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl TokenConfig {
    /// Parses the `AIMON_TOKENS` form: comma-separated `name:scope+scope:secret` entries
    /// (`ci:read+write:s3cret,grafana:read:t0ken`). Errors never repeat a secret.
    pub fn parse_list(text: &str) -> Result<Vec<TokenConfig>, String> {
        let mut tokens = Vec::new();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(scopes), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "token {}: expected NAME:SCOPES:SECRET (SCOPES like read+write)",
                    i + 1
                ));
            };
            let scopes = scopes
                .split('+')
                .map(|s| {
                    s.parse::<Scope>()
                        .map_err(|e| format!("token {name:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            tokens.push(TokenConfig {
                name: name.to_owned(),
                secret: secret.to_owned(),
                scopes,
            });
        }
        Ok(tokens)
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// What the server accepts. Every limit answers a clear error, never an unbounded buffer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body as sent (compressed or not): 413 above.
    pub max_body_bytes: usize,
    /// Largest body after decompression (gzip, snappy): 413 above, checked while
    /// decompressing, so a small bomb never grows past it.
    pub max_decompressed_bytes: usize,
    /// Most samples in one request: 413 above.
    pub max_samples_per_request: usize,
    /// Most attributes kept per OTLP data point; the rest are dropped and counted.
    pub max_attributes: usize,
    /// Time to receive a request's headers.
    #[serde(with = "seconds")]
    pub header_timeout: Duration,
    /// Time to answer a request (not the event stream): 408 above.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// Samples the ingest queue holds before it answers 503 with `Retry-After`.
    pub queue_samples: usize,
    /// Most samples in one backend batch made of coalesced requests.
    pub batch_samples: usize,
    /// Batches stored at once, each by its own `save_metrics` call. Unset: one for SQLite,
    /// whose writes take turns anyway (concurrent batches only make them smaller), four for
    /// the stores that gain from concurrent calls.
    pub ingest_writers: Option<usize>,
    /// Events an event-stream client may fall behind before it is dropped.
    pub event_buffer: usize,
    /// Write requests handled at once; more wait for their turn before their body is read,
    /// which bounds the memory bodies take (each up to the limits above).
    pub max_concurrent_writes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 16 << 20,
            max_samples_per_request: 100_000,
            max_attributes: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            queue_samples: 1_000_000,
            batch_samples: 50_000,
            ingest_writers: None,
            event_buffer: 1024,
            max_concurrent_writes: 64,
        }
    }
}

impl ServerConfig {
    /// Refuses what would make a server that misbehaves: a token without a scope or secret,
    /// two tokens with one secret, an origin that is not a header value, a zero limit.
    pub fn validate(&self) -> Result<(), String> {
        for (i, token) in self.tokens.iter().enumerate() {
            if token.name.is_empty() {
                return Err(format!("token {}: the name is empty", i + 1));
            }
            if token.secret.is_empty() {
                return Err(format!("token {:?}: the secret is empty", token.name));
            }
            if token.scopes.is_empty() {
                return Err(format!(
                    "token {:?}: no scope (read, write or admin)",
                    token.name
                ));
            }
            if self.tokens[..i].iter().any(|t| t.secret == token.secret) {
                return Err(format!(
                    "token {:?}: its secret is another token's",
                    token.name
                ));
            }
        }
        for origin in &self.cors_origins {
            if origin.is_empty() || axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(format!("cors_origins: {origin:?} is not an origin"));
            }
        }
        let l = &self.limits;
        for (name, value) in [
            ("max_body_bytes", l.max_body_bytes),
            ("max_decompressed_bytes", l.max_decompressed_bytes),
            ("max_samples_per_request", l.max_samples_per_request),
            ("max_attributes", l.max_attributes),
            ("queue_samples", l.queue_samples),
            ("batch_samples", l.batch_samples),
            ("ingest_writers", l.ingest_writers.unwrap_or(1)),
            ("event_buffer", l.event_buffer),
            ("max_concurrent_writes", l.max_concurrent_writes),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be above 0"));
            }
        }
        if l.header_timeout.is_zero() || l.request_timeout.is_zero() {
            return Err("limits: timeouts must be above 0 seconds".to_owned());
        }
        Ok(())
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists_parse_and_their_errors_hide_the_secret() {
        let tokens = TokenConfig::parse_list("ci:read+write:s3cret, grafana:read:t:0ken").unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].scopes, vec![Scope::Read, Scope::Write]);
        // The secret is everything after the second colon.
        assert_eq!(tokens[1].secret, "t:0ken");
        let e = TokenConfig::parse_list("ci:read+fly:s3cret").unwrap_err();
        assert!(e.contains("fly") && !e.contains("s3cret"), "{e}");
        let e = TokenConfig::parse_list("s3cret").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(!format!("{tokens:?}").contains("s3cret"));
    }

    #[test]
    fn configurations_that_would_misbehave_are_refused() {
        assert!(ServerConfig::default().validate().is_ok());
        let with = |tokens: &str| ServerConfig {
            tokens: TokenConfig::parse_list(tokens).unwrap(),
            ..ServerConfig::default()
        };
        assert!(with("a:read:s1,b:write:s2").validate().is_ok());
        let e = with("a:read:same,b:write:same").validate().unwrap_err();
        assert!(e.contains("another token") && !e.contains("same"), "{e}");
        let mut empty_scopes = with("a:read:s1");
        empty_scopes.tokens[0].scopes.clear();
        assert!(empty_scopes.validate().unwrap_err().contains("no scope"));
        assert!(
            with("a:read:")
                .validate()
                .unwrap_err()
                .contains("secret is empty")
        );
        let mut cors = ServerConfig::default();
        cors.cors_origins.push("http://ok.test\n".to_owned());
        assert!(cors.validate().is_err());
        let mut zero = ServerConfig::default();
        zero.limits.request_timeout = Duration::ZERO;
        assert!(zero.validate().is_err());
        zero = ServerConfig::default();
        zero.limits.queue_samples = 0;
        assert!(zero.validate().unwrap_err().contains("queue_samples"));
    }

    #[test]
    fn the_default_listens_on_loopback() {
        assert!(ServerConfig::default().listen.ip().is_loopback());
    }
}
