//! Bearer tokens with scopes. Secrets are compared in constant time and never logged: the
//! request log and metrics name a token by its `name`.

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::TokenConfig;
use crate::error::ApiError;

/// What a token may do. Each scope implies the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Queries, history, stats, the event stream.
    Read,
    /// Everything `read` does, and writes: metrics, alerts and their actions, agent states,
    /// OTLP and remote write.
    Write,
    /// Everything, and maintenance (retention).
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, write or admin"
            )),
        }
    }
}

/// The tokens the server knows. Empty: every route is open.
pub struct Tokens {
    tokens: Vec<(String, Vec<u8>, Scope)>,
}

impl Tokens {
    /// Each token with the highest of its scopes.
    pub fn new(config: &[TokenConfig]) -> Self {
        Tokens {
            tokens: config
                .iter()
                .map(|t| {
                    let scope = t.scopes.iter().copied().max().unwrap_or(Scope::Read);
                    (t.name.clone(), t.secret.as_bytes().to_vec(), scope)
                })
                .collect(),
        }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The name of the token in `headers` if it has `needed`; 401 without a known token, 403
    /// with one that lacks the scope. Every configured token is compared, in constant time
    /// for equal lengths, so the time taken says nothing about which one matched.
    pub fn check(&self, headers: &HeaderMap, needed: Scope) -> Result<Option<&str>, ApiError> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "this route needs a bearer token (Authorization: Bearer …)",
            ));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| ApiError::unauthenticated("the Authorization header is not Bearer"))?;
        let mut found: Option<&(String, Vec<u8>, Scope)> = None;
        for token in &self.tokens {
            if bool::from(token.1.as_slice().ct_eq(presented)) {
                found = Some(token);
            }
        }
        match found {
            None => Err(ApiError::unauthenticated("unknown token")),
            Some((name, _, scope)) if *scope >= needed => Ok(Some(name)),
            Some((name, _, scope)) => Err(ApiError::forbidden(format!(
                "token {name:?} has scope {scope}; this route needs {needed}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn scopes_imply_the_lower_ones_and_errors_never_show_a_secret() {
        let tokens = Tokens::new(&TokenConfig::parse_list("r:read:rrr,w:write:www").unwrap());
        assert_eq!(
            tokens.check(&headers("Bearer www"), Scope::Read).unwrap(),
            Some("w")
        );
        let e = tokens
            .check(&headers("Bearer rrr"), Scope::Write)
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 403);
        assert!(!e.message().contains("rrr"), "{}", e.message());
        let e = tokens
            .check(&headers("Bearer nope"), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 401);
        assert!(!e.message().contains("nope"));
        let e = tokens.check(&HeaderMap::new(), Scope::Read).unwrap_err();
        assert_eq!(e.status().as_u16(), 401);
        let e = tokens
            .check(&headers("Basic d3d3"), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 401);
        // A prefix of a token is not the token.
        let e = tokens
            .check(&headers("Bearer ww"), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 401);
    }

    #[test]
    fn without_tokens_every_route_is_open() {
        let tokens = Tokens::new(&[]);
        assert_eq!(tokens.check(&HeaderMap::new(), Scope::Admin).unwrap(), None);
    }
}
