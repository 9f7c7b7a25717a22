//! Mapping the Qdrant clients' errors onto [`aimon_core::Error`] kinds: the gRPC client's
//! (server mode), the REST answers of the snapshot port (server-mode native backups) and the
//! embedded engine's (`qdrant-edge`).

#[cfg(feature = "qdrant-edge")]
use std::path::Path;

use aimon_core::{Error, ErrorKind};
#[cfg(feature = "qdrant-edge")]
use qdrant_edge::OperationError;

/// A client error as an aimon error; never includes the API key (tonic's status carries the
/// server's message and metadata only, and the key is request metadata, not response).
#[cfg(feature = "qdrant")]
pub(crate) fn client_error(e: qdrant_client::QdrantError) -> Error {
    let kind = client_error_kind(&e);
    match &e {
        // The server's (or the client's own) message and the gRPC code, without the response
        // metadata qdrant-client's `Display` appends (`MetadataMap { headers: … }`).
        qdrant_client::QdrantError::ResponseError { status } => Error::new(
            kind,
            format!("qdrant: {} (gRPC {:?})", status.message(), status.code()),
        ),
        _ => Error::new(kind, format!("qdrant: {e}")),
    }
}

/// Parts of the messages of Qdrant's `Internal` answers that say a node or a replica could not
/// be reached, rather than that something is broken: retrying may help, so they are
/// `Unavailable`. Qdrant (1.x, `lib/collection/src/shards/replica_set/update.rs` and the
/// transport channel pool) answers a write it could not apply on `write_consistency_factor`
/// replicas with gRPC `Internal` ("Service internal error: …") carrying one of these:
/// - "Failed to apply operation to at least one `Active` replica. Consistency of this update is
///   not guaranteed. Please retry." and "Some replica of shard N failed to apply operation and
///   deactivation timed out … Consistency of this update is not guaranteed. Please retry.";
/// - "The replica set for shard N on peer P has no active replica";
/// - "Failed to apply update with … ordering via leader peer P: …";
/// - fewer replicas than the factor answered: the first replica's failure, which for a node
///   that is down is its connection error ("Failed to connect to …", "Peer … is not available")
///   or its `Unavailable` status wrapped as text ("Tonic status error: …" with the code's name
///   or, from tonic 0.13 on, its description).
///
/// qdrant-client itself answers a server it cannot connect to with `Internal` "Failed to
/// connect to …" too.
#[cfg(feature = "qdrant")]
const UNAVAILABLE_MARKERS: [&str; 7] = [
    "Consistency of this update is not guaranteed",
    "has no active replica",
    "via leader peer",
    "Failed to connect to",
    "status: Unavailable",
    "The service is currently unavailable",
    "Shard temporarily unavailable",
];

/// Whether an `Internal` answer's message is one of [`UNAVAILABLE_MARKERS`] (or "Peer … is not
/// available").
#[cfg(feature = "qdrant")]
fn internal_means_unavailable(message: &str) -> bool {
    UNAVAILABLE_MARKERS.iter().any(|m| message.contains(m))
        || (message.contains("Peer ") && message.contains(" is not available"))
}

#[cfg(feature = "qdrant")]
pub(crate) fn client_error_kind(e: &qdrant_client::QdrantError) -> ErrorKind {
    use qdrant_client::QdrantError as E;
    match e {
        E::ResponseError { status } => match status.code() {
            tonic::Code::Unavailable => ErrorKind::Unavailable,
            tonic::Code::Internal if internal_means_unavailable(status.message()) => {
                ErrorKind::Unavailable
            }
            // The client's own timeout arrives as `Cancelled`.
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorKind::Timeout,
            tonic::Code::Aborted => ErrorKind::Unavailable,
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::AlreadyExists => ErrorKind::Conflict,
            tonic::Code::InvalidArgument => ErrorKind::InvalidInput,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                ErrorKind::ConfigInvalid
            }
            _ => ErrorKind::Backend,
        },
        E::ResourceExhaustedError { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

/// How much of an error response's body an error message quotes.
#[cfg(feature = "qdrant")]
pub(crate) const BODY_QUOTE: usize = 300;

/// A transport failure: the server is away or too slow (retryable).
#[cfg(feature = "qdrant")]
pub(crate) fn transport_error(what: &str, e: &reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    // reqwest's message names the URL, which holds no secret (the key is a header).
    Error::new(kind, format!("qdrant snapshot {what}: {e}"))
}

/// The error of a REST answer that is not a success.
#[cfg(feature = "qdrant")]
pub fn status_error(url: &url::Url, status: reqwest::StatusCode, body: &[u8]) -> Error {
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::ConfigInvalid,
        404 => ErrorKind::NotFound,
        408 | 429 | 502..=504 => ErrorKind::Unavailable,
        400 | 422 => ErrorKind::InvalidInput,
        _ => ErrorKind::Backend,
    };
    let body = String::from_utf8_lossy(&body[..body.len().min(BODY_QUOTE)]);
    Error::new(
        kind,
        format!("qdrant REST {} {}: {}", url.path(), status, body.trim()),
    )
}

/// An engine error as an aimon error: a shard locked by another process is `Unavailable`.
#[cfg(feature = "qdrant-edge")]
pub(crate) fn engine_error(e: OperationError) -> Error {
    let text = e.to_string();
    if text.contains("WouldBlock") {
        Error::new(
            ErrorKind::Unavailable,
            "the Qdrant edge directory is in use by another process or backend",
        )
        .with_source(e)
    } else if text.contains("dimension error") {
        Error::new(ErrorKind::InvalidInput, text)
    } else {
        Error::new(ErrorKind::Backend, text)
    }
}

#[cfg(feature = "qdrant-edge")]
pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, format!("{what} {}", path.display())).with_source(e)
}

#[cfg(feature = "qdrant-edge")]
pub(crate) fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Backend,
        "the Qdrant edge engine failed on a blocking thread",
    )
    .with_source(e)
}

#[cfg(all(test, feature = "qdrant"))]
mod tests {
    use super::*;

    fn response(code: tonic::Code, message: &str) -> qdrant_client::QdrantError {
        qdrant_client::QdrantError::from(tonic::Status::new(code, message))
    }

    #[test]
    fn a_write_the_cluster_cannot_replicate_is_a_retryable_unavailable() {
        // The answers Qdrant gives when fewer replicas than write_consistency_factor applied a
        // write (`Internal`, "Service internal error: …", as its gRPC layer formats them).
        for message in [
            "Service internal error: Failed to apply operation to at least one `Active` replica. \
             Consistency of this update is not guaranteed. Please retry. Failed peer: 2, error: \
             Service internal error: Tonic status error: status: Unavailable, message: \"Failed \
             to connect to http://node-2:6335/\"",
            "Service internal error: Some replica of shard 0 failed to apply operation and \
             deactivation timed out after 30s. Consistency of this update is not guaranteed. \
             Please retry.",
            "Service internal error: The replica set for shard 1 on peer 3 has no active replica",
            "Service internal error: Failed to apply update with Weak ordering via leader peer 2: \
             Service internal error: timeout",
            "Service internal error: Tonic status error: status: Unavailable, message: \"Peer \
             http://node-3:6335/ is not available\"",
            "Service internal error: Tonic status error: code: 'The service is currently \
             unavailable', message: \"Failed to connect to http://node-3:6335/, error: \
             transport error\"",
            // qdrant-client's own answer for a server it cannot connect to.
            "Failed to connect to http://127.0.0.1:1/: tonic::transport::Error(Transport, \
             ConnectError(\"tcp connect error\", Os { code: 111, kind: ConnectionRefused }))",
        ] {
            let err = client_error(response(tonic::Code::Internal, message));
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{message}");
            assert!(err.is_retryable(), "{message}");
        }
        let err = client_error(response(
            tonic::Code::Unavailable,
            "Shard temporarily unavailable: shard 0 is being transferred",
        ));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn a_server_that_cannot_be_reached_is_named_in_one_clear_message() {
        let message = "Failed to connect to http://127.0.0.1:1/: tonic::transport::Error(Transport, \
             ConnectError(\"tcp connect error\", Os { code: 111, kind: ConnectionRefused }))";
        let mut status = tonic::Status::new(tonic::Code::Internal, message);
        status
            .metadata_mut()
            .insert("x-request-id", "abc".parse().unwrap());
        let err = client_error(qdrant_client::QdrantError::from(status));
        let text = err.to_string();
        assert!(
            text.starts_with("unavailable: qdrant: Failed to connect to http://127.0.0.1:1/"),
            "{text}"
        );
        assert!(text.ends_with("(gRPC Internal)"), "{text}");
        assert!(
            !text.contains("MetadataMap") && !text.contains("x-request-id"),
            "{text}"
        );
    }

    #[test]
    fn other_internal_errors_stay_backend_errors() {
        for message in [
            "Service internal error: File IO error: No space left on device (os error 28)",
            "Service internal error: Out of memory, free: 0",
            "Failed to create TLS config: invalid certificate",
        ] {
            let err = client_error(response(tonic::Code::Internal, message));
            assert_eq!(err.kind(), ErrorKind::Backend, "{message}");
            assert!(!err.is_retryable(), "{message}");
        }
    }

    #[test]
    fn grpc_codes_map_to_error_kinds() {
        for (code, kind) in [
            (tonic::Code::Unavailable, ErrorKind::Unavailable),
            (tonic::Code::Aborted, ErrorKind::Unavailable),
            (tonic::Code::DeadlineExceeded, ErrorKind::Timeout),
            (tonic::Code::Cancelled, ErrorKind::Timeout),
            (tonic::Code::NotFound, ErrorKind::NotFound),
            (tonic::Code::AlreadyExists, ErrorKind::Conflict),
            (tonic::Code::InvalidArgument, ErrorKind::InvalidInput),
            (tonic::Code::Unauthenticated, ErrorKind::ConfigInvalid),
            (tonic::Code::PermissionDenied, ErrorKind::ConfigInvalid),
            (tonic::Code::DataLoss, ErrorKind::Backend),
        ] {
            assert_eq!(client_error(response(code, "x")).kind(), kind, "{code:?}");
        }
    }

    #[test]
    fn rest_answers_become_typed_errors() {
        let url = url::Url::parse("http://db:6333/collections/c/snapshots/s").unwrap();
        let kind = |code: u16| {
            status_error(&url, reqwest::StatusCode::from_u16(code).unwrap(), b"").kind()
        };
        assert_eq!(kind(401), ErrorKind::ConfigInvalid);
        assert_eq!(kind(403), ErrorKind::ConfigInvalid);
        assert_eq!(kind(404), ErrorKind::NotFound);
        assert_eq!(kind(503), ErrorKind::Unavailable);
        assert_eq!(kind(400), ErrorKind::InvalidInput);
        assert_eq!(kind(500), ErrorKind::Backend);
        let long = vec![b'x'; 10_000];
        let err = status_error(&url, reqwest::StatusCode::INTERNAL_SERVER_ERROR, &long);
        assert!(err.to_string().len() < 500, "{}", err.to_string().len());
    }
}
