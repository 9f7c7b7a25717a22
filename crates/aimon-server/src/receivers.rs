//! Ingest in other systems' protocols, and the server's own metrics.
//!
//! - `POST /v1/metrics`: OTLP/HTTP metrics, protobuf or JSON, gzip or not ([`crate::otlp`],
//!   docs/otlp.md).
//! - `POST /api/v1/write`: Prometheus remote write 1.0 ([`crate::remote_write`],
//!   docs/prometheus.md).
//! - `GET /metrics`: the server's own metrics for Prometheus to scrape.
//!
//! Both ingest routes hand their samples to the ingest queue like the JSON API.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::server::App;
use crate::{otlp, remote_write};

/// The server's own metrics (requests, latency, samples ingested, backend errors, queue depth)
/// in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn own_metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.telemetry.render(),
    )
        .into_response()
}

/// Families whose Prometheus metadata the server remembers (type, help, unit): Prometheus 2.x
/// sends metadata in requests of their own, so a series' type comes from an earlier request.
/// Past this many families, new ones are not remembered (their series are gauges).
const MAX_REMEMBERED_FAMILIES: usize = 10_000;

/// Prometheus remote write 1.0 (protobuf, snappy). 204 when every sample was stored; 400 with
/// the reasons when some were rejected (the valid ones are stored: resending would not help,
/// so Prometheus must not retry); 503 or 500 when storing failed (Prometheus retries; a resent
/// sample overwrites itself). docs/prometheus.md has the mapping.
#[utoipa::path(post, path = "/api/v1/write", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "snappy-compressed prometheus.WriteRequest"),
    responses((status = 204), (status = 400), (status = 413), (status = 415), (status = 503)))]
pub async fn remote_write(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if !remote_write::content_type_is_supported(content_type) {
        return Err(ApiError::unsupported_media(format!(
            "Content-Type {:?} is not remote write 1.0 (application/x-protobuf)",
            content_type.unwrap_or_default()
        )));
    }
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("snappy") => {}
        Some(other) => {
            return Err(ApiError::unsupported_media(format!(
                "Content-Encoding {other:?}: remote write bodies are snappy"
            )));
        }
    }
    let bytes = body::bytes(body)?;
    let request = remote_write::decode(&bytes, app.limits.max_decompressed_bytes).map_err(|e| {
        if e.is_too_large() {
            ApiError::too_large(e.to_string())
        } else {
            ApiError::invalid("body", e.to_string())
        }
    })?;
    let mapped = {
        let mut known = app
            .prometheus_metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in &request.metadata {
            if known.len() < MAX_REMEMBERED_FAMILIES || known.contains_key(&m.metric_family_name) {
                known.insert(m.metric_family_name.clone(), m.clone());
            }
        }
        remote_write::to_metrics_with(&request, &known)
    };
    app.check_samples(mapped.accepted_samples as usize)?;
    if !mapped.metrics.is_empty() {
        app.ingest.submit(mapped.metrics.clone()).await?;
    }
    if mapped.status() == StatusCode::NO_CONTENT {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::invalid("body", mapped.response_text()))
    }
}

/// OTLP/HTTP metrics, `application/x-protobuf` or `application/json`, gzip or not. 200 with
/// the spec's partial success (rejected data points counted, with a message) once the
/// accepted points are stored; 400 for a body that does not decode (not retried by
/// exporters); 503 when the queue is full. docs/otlp.md has the mapping.
#[utoipa::path(post, path = "/v1/metrics", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "ExportMetricsServiceRequest (or its OTLP/JSON form as application/json)"),
    responses((status = 200, description = "ExportMetricsServiceResponse, in the request's encoding"),
        (status = 400), (status = 413), (status = 415), (status = 503)))]
pub async fn otlp_metrics(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let content_type = body::media_type(&headers).unwrap_or_default();
    let Some(encoding) = otlp::Encoding::from_content_type(&content_type) else {
        return Err(ApiError::unsupported_media(format!(
            "Content-Type {content_type:?}: OTLP/HTTP is application/x-protobuf or application/json"
        )));
    };
    let bytes = body::decoded(
        &headers,
        body::bytes(body)?,
        app.limits.max_decompressed_bytes,
    )?;
    let request = otlp::decode(&bytes, encoding)?;
    let limits = otlp::AttributeLimits {
        max_attributes: app.limits.max_attributes,
        ..otlp::AttributeLimits::default()
    };
    let mapped = otlp::to_metrics(&request, &limits);
    app.check_samples(mapped.metrics.iter().map(|m| m.values.len()).sum())?;
    let response = otlp::partial_success(&mapped);
    if !mapped.metrics.is_empty() {
        app.ingest.submit(mapped.metrics).await?;
    }
    let content_type = match encoding {
        otlp::Encoding::Protobuf => "application/x-protobuf",
        otlp::Encoding::Json => "application/json",
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        otlp::encode_response(&response, encoding),
    )
        .into_response())
}
