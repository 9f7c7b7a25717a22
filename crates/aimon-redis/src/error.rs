//! Mapping redis-rs errors onto [`aimon_core::Error`] kinds.

use aimon_core::{Error, ErrorKind};
use redis::{RedisError, ServerErrorKind};

/// The kind of a redis-rs error: connection loss, refusal, a cluster or master that is moving
/// and a server still loading are `Unavailable` (retryable); timeouts are `Timeout`; a refused
/// login or bad client setting is `ConfigInvalid`; everything else is `Backend`.
pub(crate) fn kind_of(err: &RedisError) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_cluster_error()
    {
        return ErrorKind::Unavailable;
    }
    match err.kind() {
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        )
        | redis::ErrorKind::ClusterConnectionNotFound
        | redis::ErrorKind::MasterNameNotFoundBySentinel => ErrorKind::Unavailable,
        redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
            ErrorKind::ConfigInvalid
        }
        redis::ErrorKind::Server(ServerErrorKind::NoPerm) => ErrorKind::ConfigInvalid,
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => ErrorKind::Corrupted,
        _ => ErrorKind::Backend,
    }
}

/// Whether the error means the script cache lacks one of our scripts (after a restart, a
/// failover or `SCRIPT FLUSH`).
pub(crate) fn is_noscript(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(ServerErrorKind::NoScript)
    ) || err.code() == Some("NOSCRIPT")
}

/// Wraps a redis-rs error. Its text comes from the server or the client library, which never
/// include the password.
pub(crate) fn from_redis(err: RedisError) -> Error {
    let kind = kind_of(&err);
    let message = match kind {
        ErrorKind::Timeout => "Redis did not answer in time",
        ErrorKind::Unavailable => "Redis is unavailable",
        ErrorKind::ConfigInvalid => "Redis refused the connection settings",
        ErrorKind::Corrupted => "Redis answered with data this driver cannot read",
        _ => "Redis reported an error",
    };
    Error::new(kind, message).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_retryable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let err = from_redis(RedisError::from(io));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
    }
}
