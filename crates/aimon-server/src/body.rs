//! Request bodies: the size as sent is bounded by the router's body limit, the size after
//! `Content-Encoding: gzip` by [`Limits::max_decompressed_bytes`], checked while inflating so a
//! gzip bomb stops at the limit (413) instead of filling memory.
//!
//! [`Limits::max_decompressed_bytes`]: crate::config::Limits::max_decompressed_bytes

use std::io::Read;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// The body's bytes, or the error its rejection means (413 past the body limit).
pub fn bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the request body is larger than the server accepts: {rejection}"
            ))
        } else {
            ApiError::invalid(
                "body",
                format!("the request body could not be read: {rejection}"),
            )
        }
    })
}

/// The body after its `Content-Encoding` (none, `identity` or `gzip`), at most `limit` bytes.
pub fn decoded(headers: &HeaderMap, body: Bytes, limit: usize) -> ApiResult<Bytes> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => {
            if body.len() > limit {
                return Err(too_large(limit));
            }
            Ok(body)
        }
        Some("gzip") => gunzip(&body, limit).map(Bytes::from),
        Some(other) => Err(ApiError::unsupported_media(format!(
            "Content-Encoding {other:?} is not supported; send gzip or no encoding"
        ))),
    }
}

/// Inflates at most `limit` bytes; more is 413, a damaged stream 400.
pub fn gunzip(body: &[u8], limit: usize) -> ApiResult<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| ApiError::invalid("body", format!("the gzip body is malformed: {e}")))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the decompressed request body is larger than {limit} bytes"
    ))
}

/// The media type of the request, lower case, without parameters (`application/json`).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// A JSON body: `Content-Type: application/json` (415 otherwise), decoded and parsed (400 with
/// serde's message, which names the line, column and field).
pub fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> ApiResult<T> {
    match media_type(headers).as_deref() {
        Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::unsupported_media(format!(
                "Content-Type {other:?} is not accepted here; send application/json"
            )));
        }
        None => {
            return Err(ApiError::unsupported_media(
                "Content-Type is missing; send application/json",
            ));
        }
    }
    let bytes = decoded(headers, bytes(body)?, limit)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("the JSON body is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to ~64 KiB.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let e = gunzip(&bomb, 1 << 20).unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(gunzip(&bomb, 64 << 20).unwrap().len(), 64 << 20);
        let e = gunzip(b"not gzip at all", 1 << 20).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let truncated = &bomb[..bomb.len() / 2];
        assert_eq!(
            gunzip(truncated, 64 << 20).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn only_json_is_read_as_json() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e =
            json::<serde_json::Value>(&headers, Ok(Bytes::from_static(b"{}")), 100).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        let v: serde_json::Value = json(&headers, Ok(Bytes::from_static(b"{}")), 100).unwrap();
        assert!(v.is_object());
        let e = json::<serde_json::Value>(&headers, Ok(Bytes::from_static(b"{")), 100).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        headers.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let e =
            json::<serde_json::Value>(&headers, Ok(Bytes::from_static(b"{}")), 100).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
