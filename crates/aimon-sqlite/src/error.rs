//! Mapping sqlx errors onto [`aimon_core::Error`] kinds.

use aimon_core::{Error, ErrorKind};

/// SQLite primary result codes this crate branches on.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_NOTADB: i64 = 26;

/// The kind of a sqlx error: a busy or locked database and connection loss are `Unavailable`
/// (retryable), an exhausted pool is `Timeout`, a damaged file is `Corrupted`, any other
/// database error is `Backend`.
pub(crate) fn kind_of(err: &sqlx::Error) -> ErrorKind {
    match err {
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Io(_) => {
            ErrorKind::Unavailable
        }
        sqlx::Error::Configuration(_) => ErrorKind::ConfigInvalid,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => ErrorKind::Corrupted,
        sqlx::Error::Database(db) => {
            let code = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match code {
                Some(SQLITE_BUSY | SQLITE_LOCKED) => ErrorKind::Unavailable,
                Some(SQLITE_CANTOPEN) => ErrorKind::Unavailable,
                Some(SQLITE_CORRUPT | SQLITE_NOTADB) => ErrorKind::Corrupted,
                _ if db.message().contains("database is locked") => ErrorKind::Unavailable,
                _ => ErrorKind::Backend,
            }
        }
        _ => ErrorKind::Backend,
    }
}

/// Wraps a sqlx error.
pub(crate) fn from_sqlx(err: sqlx::Error) -> Error {
    let kind = kind_of(&err);
    let message = match kind {
        ErrorKind::Timeout => "timed out waiting for a database connection",
        ErrorKind::Unavailable => "the database is unavailable",
        ErrorKind::Corrupted => "the database holds data it cannot read",
        ErrorKind::ConfigInvalid => "the database configuration is invalid",
        _ => "the database reported an error",
    };
    Error::new(kind, message).with_source(err)
}

/// Decodes JSON stored as text (tags, labels, metadata); malformed text is `Corrupted`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::malformed(what).with_source(e))
}

/// Decodes the JSON text column `i` of a row.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    what: &str,
) -> Result<T, Error> {
    use sqlx::Row;
    let text: String = row.try_get(i).map_err(from_sqlx)?;
    parse_json(&text, what)
}

/// An embedding as the `embedding` BLOB columns hold it: little-endian f32s.
pub(crate) fn encode_embedding(vector: Option<&[f32]>) -> Option<Vec<u8>> {
    vector.map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Decodes the `embedding` BLOB column `i` of a row; a length that is no multiple of 4 is
/// `Corrupted`.
pub(crate) fn embedding_column(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
) -> Result<Option<Vec<f32>>, Error> {
    use sqlx::Row;
    let Some(bytes) = row.try_get::<Option<Vec<u8>>, _>(i).map_err(from_sqlx)? else {
        return Ok(None);
    };
    if bytes.len() % 4 != 0 {
        return Err(Error::malformed("embedding"));
    }
    Ok(Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// A `COUNT(*)` as the unsigned count the reports carry.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_errors_map_to_retryable_kinds() {
        assert_eq!(kind_of(&sqlx::Error::PoolTimedOut), ErrorKind::Timeout);
        assert_eq!(kind_of(&sqlx::Error::PoolClosed), ErrorKind::Unavailable);
        assert!(from_sqlx(sqlx::Error::PoolClosed).is_retryable());
        assert_eq!(kind_of(&sqlx::Error::RowNotFound), ErrorKind::Backend);
    }
}
