//! Mapping HTTP and InfluxDB errors onto [`aimon_core::Error`] kinds.
//!
//! Whether a failure can be retried is decided here, once ([`kind_of_status`],
//! [`from_reqwest`]), not at the call sites: a refused or dropped connection, a 5xx answer or a
//! 429 is `Unavailable` (retryable), a timeout `Timeout`; a field type conflict, points beyond
//! the retention policy and the server's cardinality limits (`max-values-per-tag`,
//! `max-series-per-database`) are `Conflict` (what is stored refuses the write: retrying the
//! same batch cannot help); a rejected credential `ConfigInvalid`.

use aimon_core::{Error, ErrorKind};

/// The kind of an HTTP answer that is not a success, from its status and InfluxDB's message.
pub(crate) fn kind_of_status(status: u16, message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if lower.contains("field type conflict")
        || lower.contains("points beyond retention policy")
        || lower.contains("max-values-per-tag limit exceeded")
        || lower.contains("max-series-per-database limit exceeded")
        || lower.contains("conflict")
    {
        return ErrorKind::Conflict;
    }
    if lower.contains("database not found")
        || lower.contains("retention policy not found")
        || lower.contains("bucket not found")
        || (lower.contains("bucket") && lower.contains("not found"))
    {
        return ErrorKind::ConfigInvalid;
    }
    match status {
        401 | 403 => ErrorKind::ConfigInvalid,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        413 => ErrorKind::InvalidInput,
        429 | 500 | 502 | 503 | 504 => ErrorKind::Unavailable,
        400 | 422 => ErrorKind::Backend,
        _ => ErrorKind::Backend,
    }
}

/// An HTTP answer that is not a success.
pub(crate) fn from_status(status: u16, message: &str) -> Error {
    let kind = kind_of_status(status, message);
    let what = match (kind, status) {
        (ErrorKind::InvalidInput, 413) => {
            "InfluxDB refused a request as too large (lower the `batch_bytes` option)"
        }
        (ErrorKind::Conflict, _) => "InfluxDB refused the points",
        (ErrorKind::Unavailable, _) => "InfluxDB is unavailable",
        (ErrorKind::ConfigInvalid, _) => "InfluxDB refused the configuration or credentials",
        _ => "InfluxDB reported an error",
    };
    Error::new(kind, format!("{what} (HTTP {status}): {}", clip(message)))
}

/// An error InfluxDB reported inside a successful `/query` answer.
pub(crate) fn from_query_error(message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("database not found") {
        ErrorKind::ConfigInvalid
    } else if lower.contains("timeout") || lower.contains("timed out") {
        ErrorKind::Timeout
    } else if lower.contains("error parsing query") {
        // aimon builds every query from quoted parts: a parse error is a defect, not input.
        ErrorKind::Backend
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, format!("InfluxDB: {}", clip(message)))
}

/// A transport error: connection refused, reset or cut mid-answer is `Unavailable`.
pub(crate) fn from_reqwest(err: reqwest::Error) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_builder() {
        ErrorKind::ConfigInvalid
    } else {
        // is_connect, is_request (the connection dropped while sending), is_body (cut while
        // reading): the server went away; the same request may succeed later.
        ErrorKind::Unavailable
    };
    let message = match kind {
        ErrorKind::Timeout => "timed out waiting for InfluxDB",
        ErrorKind::ConfigInvalid => "cannot build the request to InfluxDB",
        _ => "InfluxDB is unavailable",
    };
    // The URL carries no credentials (they travel in headers), but leave it out all the same.
    Error::new(kind, message).with_source(err.without_url())
}

fn clip(message: &str) -> &str {
    let message = message.trim();
    match message.char_indices().nth(500) {
        Some((i, _)) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_kinds() {
        assert_eq!(
            kind_of_status(
                400,
                "partial write: field type conflict: input field \"v\" on measurement \"samples\" is type string, already exists as type float dropped=1"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_of_status(
                400,
                "partial write: points beyond retention policy dropped=3"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_of_status(
                400,
                "partial write: max-values-per-tag limit exceeded (100000/100000): measurement=\"samples\" tag=\"t.request\" value=\"r-100001\" dropped=1"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_of_status(
                400,
                "partial write: max-series-per-database limit exceeded: (1000000) dropped=1"
            ),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_of_status(404, "database not found: \"x\""),
            ErrorKind::ConfigInvalid
        );
        assert_eq!(
            kind_of_status(401, "authorization failed"),
            ErrorKind::ConfigInvalid
        );
        assert_eq!(kind_of_status(503, ""), ErrorKind::Unavailable);
        assert_eq!(
            kind_of_status(500, "engine: cache maximum memory size exceeded"),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind_of_status(404, "bucket \"b\" not found"),
            ErrorKind::ConfigInvalid
        );
        let too_large = from_status(413, "Request Entity Too Large");
        assert_eq!(too_large.kind(), ErrorKind::InvalidInput);
        assert!(too_large.to_string().contains("batch_bytes"), "{too_large}");
        assert!(from_status(429, "slow down").is_retryable());
        assert!(!from_status(400, "unable to parse").is_retryable());
    }
}
