//! Mapping sqlx/PostgreSQL errors onto [`aimon_core::Error`] kinds, by SQLSTATE.

use aimon_core::{Error, ErrorKind};

/// The kind of a SQLSTATE code.
pub(crate) fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now
        "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        // serialization_failure, deadlock_detected: the same call may succeed again
        "40001" | "40P01" => ErrorKind::Unavailable,
        // query_canceled (statement_timeout)
        "57014" => ErrorKind::Timeout,
        // invalid_catalog_name (no such database), insufficient_privilege
        "3D000" | "42501" => ErrorKind::ConfigInvalid,
        // too_many_connections: other clients disconnect, and the same call may then succeed.
        "53300" => ErrorKind::Unavailable,
        // idle_session_timeout: the server closed an idle connection; a new one works.
        "57P05" => ErrorKind::Unavailable,
        // protocol_violation: the client and server disagree on the protocol; a retry sends
        // the same messages.
        "08P01" => ErrorKind::Backend,
        _ => match &code[..code.len().min(2)] {
            // connection_exception
            "08" => ErrorKind::Unavailable,
            // The rest of insufficient_resources: out of memory (also `out of shared memory`,
            // a lock table exhausted by one transaction), disk full, a configured limit
            // exceeded. The same call asks for the same resources and fails the same way
            // until someone changes the server or the request: not retryable.
            "53" => ErrorKind::Backend,
            // invalid_authorization_specification, invalid_password
            "28" => ErrorKind::ConfigInvalid,
            // integrity_constraint_violation
            "23" => ErrorKind::Conflict,
            // data_exception
            "22" => ErrorKind::InvalidInput,
            // data_corrupted, index_corrupted
            "XX" if code != "XX000" => ErrorKind::Corrupted,
            _ => ErrorKind::Backend,
        },
    }
}

/// The kind of a sqlx error: connection loss (I/O, a terminated backend, a closed pool) is
/// `Unavailable` and retryable, an exhausted pool is `Timeout`. Retryable means that the same
/// call may succeed if simply tried again: an exhausted server resource that the request
/// itself uses up (memory, the lock table, disk) is not.
pub(crate) fn kind_of(err: &sqlx::Error) -> ErrorKind {
    match err {
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) => {
            ErrorKind::Unavailable
        }
        // A connection cut mid-message shows up as a protocol error.
        sqlx::Error::Protocol(_) => ErrorKind::Unavailable,
        sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => ErrorKind::ConfigInvalid,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => ErrorKind::Corrupted,
        sqlx::Error::Database(db) => db
            .code()
            .map_or(ErrorKind::Backend, |c| kind_of_sqlstate(&c)),
        _ => ErrorKind::Backend,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Wraps a sqlx error. The source is kept: sqlx's messages hold no connection string.
pub(crate) fn from_sqlx(err: sqlx::Error) -> Error {
    let kind = kind_of(&err);
    let exhausted =
        kind == ErrorKind::Backend && sqlstate(&err).is_some_and(|c| c.starts_with("53"));
    let message = match kind {
        _ if exhausted => "the database ran out of a resource (memory, locks or disk)",
        ErrorKind::Timeout => "timed out waiting for the database",
        ErrorKind::Unavailable => "the database is unavailable",
        ErrorKind::Corrupted => "the database holds data it cannot read",
        ErrorKind::ConfigInvalid => "the database refused the configuration",
        ErrorKind::Conflict => "the write conflicts with stored data",
        _ => "the database reported an error",
    };
    Error::new(kind, message).with_source(err)
}

/// Decodes JSON stored as text; malformed text is `Corrupted`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::malformed(what).with_source(e))
}

/// A `count(*)` as the unsigned count reports carry.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind_of_sqlstate("57P01"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("08006"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("57014"), ErrorKind::Timeout);
        assert_eq!(kind_of_sqlstate("28P01"), ErrorKind::ConfigInvalid);
        assert_eq!(kind_of_sqlstate("23505"), ErrorKind::Conflict);
        assert_eq!(kind_of_sqlstate("42P01"), ErrorKind::Backend);
        assert_eq!(kind_of_sqlstate("XX001"), ErrorKind::Corrupted);
        assert_eq!(kind_of_sqlstate("57P05"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("08P01"), ErrorKind::Backend);
    }

    #[test]
    fn exhausted_resources_are_retryable_only_where_waiting_frees_them() {
        // Other clients' connections close by themselves.
        assert!(kind_of_sqlstate("53300").is_retryable());
        // `out of shared memory` (a lock table exhausted), out of memory, disk full, a
        // configured limit: the same request fails the same way.
        for code in ["53000", "53100", "53200", "53400"] {
            assert_eq!(kind_of_sqlstate(code), ErrorKind::Backend, "{code}");
            assert!(!kind_of_sqlstate(code).is_retryable(), "{code}");
        }
        assert!(from_sqlx(sqlx::Error::PoolClosed).is_retryable());
        assert_eq!(kind_of(&sqlx::Error::PoolTimedOut), ErrorKind::Timeout);
    }
}
