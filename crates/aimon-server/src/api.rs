//! The JSON API under `/api/v1`: what the command line and `StorageManager` do, over HTTP.
//!
//! Bodies are JSON (`Content-Type: application/json`, optionally `Content-Encoding: gzip`);
//! list parameters repeat (`tag=model=large&tag=region=eu`); times are RFC 3339, `now` or a
//! duration ago (`6h`), as on the command line. docs/server.md has examples of every route.

use aimon::{
    AgentState, AgentStateQuery, Aggregation, Alert, AlertQuery, AlertSeverity, AlertStatus,
    DataKind, HistoryQuery, Metadata, Metric, MetricQuery, MetricType, MetricValue,
    SimilarAgentStatesQuery, SimilarAlertsQuery, StorageBackend, Tags,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::server::App;

/// `POST /api/v1/metrics`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsBody {
    /// Series with their samples.
    metrics: Vec<MetricIn>,
}

/// A series to write: `created_at`/`updated_at` are the server's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricIn {
    /// Names the series (`agent-7/llm.latency_ms`).
    id: String,
    /// What is measured (`llm.latency_ms`).
    name: String,
    /// gauge (default), counter, histogram, summary, cpu, memory, disk, network or custom.
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<String>)]
    metric_type: Option<MetricType>,
    description: Option<String>,
    unit: Option<String>,
    /// `{ "timestamp": RFC 3339, "value": number, "tags": { key: value } }`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    values: Vec<MetricValue>,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Metadata,
}

/// What an ingest route stored.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Samples accepted: stored, or dropped as already past the store's TTL.
    accepted: usize,
}

/// Writes series and samples; answers after they are stored.
#[utoipa::path(post, path = "/api/v1/metrics", tag = "metrics", request_body = MetricsBody,
    responses((status = 200, body = Accepted), (status = 400), (status = 413), (status = 503)))]
pub async fn write_metrics(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Accepted>> {
    let request: MetricsBody = body::json(&headers, body, app.limits.max_decompressed_bytes)?;
    let metrics = request
        .metrics
        .into_iter()
        .map(|m| {
            let mut metric = Metric::new(m.id, m.name, m.metric_type.unwrap_or(MetricType::Gauge));
            metric.description = m.description;
            metric.unit = m.unit;
            metric.values = m.values;
            metric.metadata = m.metadata;
            metric
        })
        .collect::<Vec<_>>();
    app.check_samples(metrics.iter().map(|m| m.values.len()).sum())?;
    let accepted = app.ingest.submit(metrics).await?;
    Ok(Json(Accepted { accepted }))
}

/// The query parameters of `GET /api/v1/metrics` and `/series`, for the OpenAPI document (the
/// handlers read them with [`Params`], as every route does).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct MetricParams {
    name: Option<String>,
    #[param(rename = "type")]
    metric_type: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// KEY=VALUE, repeatable.
    tag: Option<Vec<String>>,
    limit: Option<usize>,
    offset: Option<usize>,
    sort: Option<String>,
    filter: Option<Vec<String>>,
}

/// Series and their samples (filters and paging as `aimon query metrics`).
#[utoipa::path(get, path = "/api/v1/metrics", tag = "metrics",
    params(MetricParams),
    responses((status = 200, body = Vec<Object>)))]
pub async fn query_metrics(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Metric>>> {
    let query = metric_query(query.as_deref())?;
    Ok(Json(app.manager.query_metrics(&query, None).await?))
}

/// The series a query finds, without their samples: a catalog of names, units and ids (as
/// `GET /api/v1/metrics` with the same parameters, each series with `values` empty).
#[utoipa::path(get, path = "/api/v1/series", tag = "metrics",
    params(MetricParams),
    responses((status = 200, body = Vec<Object>)))]
pub async fn query_series(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Metric>>> {
    let mut query = metric_query(query.as_deref())?;
    query.series_only = true;
    Ok(Json(app.manager.query_metrics(&query, None).await?))
}

/// The [`MetricQuery`] of the parameters `GET /api/v1/metrics` and `/series` take.
fn metric_query(query: Option<&str>) -> ApiResult<MetricQuery> {
    let mut p = Params::new(query);
    let query = MetricQuery {
        name: p.one("name")?,
        metric_type: p.parsed("type")?,
        start: p.time("start")?,
        end: p.time("end")?,
        tags: p.pairs("tag")?,
        options: p.options()?,
        series_only: false,
    };
    p.finish()?;
    Ok(query)
}

/// One series with every live sample.
#[utoipa::path(get, path = "/api/v1/metrics/{id}", tag = "metrics",
    params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)))]
pub async fn get_metric(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Metric>> {
    app.manager
        .get_metric(&id, None)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no series {id:?}")))
}

/// Buckets of a metric over time (as `aimon history`).
#[utoipa::path(get, path = "/api/v1/history", tag = "metrics",
    params(("name" = String, Query), ("step" = Option<String>, Query, description = "default 5m"),
        ("aggregation" = Option<String>, Query, description = "avg (default), sum, min, max, count, first, last"),
        ("start" = Option<String>, Query, description = "default 6h ago"), ("end" = Option<String>, Query),
        ("tag" = Option<Vec<String>>, Query), ("group_by" = Option<String>, Query)),
    responses((status = 200, body = Vec<Object>)))]
pub async fn history(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<aimon::HistorySeries>>> {
    let mut p = Params::new(query.as_deref());
    let name = p
        .one("name")?
        .ok_or_else(|| ApiError::invalid("name", "name is required"))?;
    let step = p
        .duration("step")?
        .unwrap_or_else(|| chrono::TimeDelta::minutes(5));
    let aggregation = p.parsed::<Aggregation>("aggregation")?.unwrap_or_default();
    let end = p.time("end")?.unwrap_or_else(aimon::time::now);
    let start = p
        .time("start")?
        .unwrap_or(end - chrono::TimeDelta::hours(6));
    let mut query = HistoryQuery::new(name, step, aggregation).range(start, end);
    query.tags = p.pairs("tag")?;
    if let Some(tag) = p.one("group_by")? {
        query = query.group_by(tag);
    }
    p.finish()?;
    Ok(Json(app.manager.get_metric_history(&query, None).await?))
}

/// `POST /api/v1/alerts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsBody {
    alerts: Vec<AlertIn>,
}

/// An alert to create or replace (upsert by `id`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertIn {
    id: String,
    name: String,
    /// info, low, medium, high or critical.
    #[schema(value_type = String)]
    severity: AlertSeverity,
    source: String,
    /// active (default), acknowledged, resolved or suppressed.
    #[schema(value_type = Option<String>)]
    status: Option<AlertStatus>,
    description: Option<String>,
    /// Default: now.
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(value_type = Object)]
    labels: Tags,
    #[serde(default)]
    #[schema(value_type = Object)]
    annotations: Tags,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Metadata,
    embedding: Option<Vec<f32>>,
}

/// What a write of alerts or agent states stored.
#[derive(Serialize, ToSchema)]
pub struct Written {
    written: u64,
    /// Items already past their TTL on arrival, not stored.
    expired: u64,
    /// Agent states older than the stored one, not stored.
    superseded: u64,
}

impl From<aimon::WriteReport> for Written {
    fn from(r: aimon::WriteReport) -> Self {
        Written {
            written: r.written,
            expired: r.expired,
            superseded: r.superseded,
        }
    }
}

/// Creates or replaces alerts.
#[utoipa::path(post, path = "/api/v1/alerts", tag = "alerts", request_body = AlertsBody,
    responses((status = 200, body = Written), (status = 400)))]
pub async fn write_alerts(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Written>> {
    let request: AlertsBody = body::json(&headers, body, app.limits.max_decompressed_bytes)?;
    app.check_items(request.alerts.len())?;
    let alerts: Vec<Alert> = request
        .alerts
        .into_iter()
        .map(|a| {
            let mut alert = Alert::new(a.id, a.name, a.severity, a.source);
            alert.status = a.status.unwrap_or(AlertStatus::Active);
            alert.description = a.description;
            if let Some(start) = a.start_time {
                alert.start_time = start;
            }
            alert.end_time = a.end_time;
            alert.labels = a.labels;
            alert.annotations = a.annotations;
            alert.metadata = a.metadata;
            alert.embedding = a.embedding;
            alert
        })
        .collect();
    Ok(Json(app.manager.save_alerts(&alerts, None).await?.into()))
}

/// Alerts (filters and paging as `aimon query alerts`).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(("status" = Option<String>, Query), ("severity" = Option<String>, Query),
        ("min_severity" = Option<String>, Query), ("source" = Option<String>, Query),
        ("start" = Option<String>, Query), ("end" = Option<String>, Query),
        ("label" = Option<Vec<String>>, Query, description = "KEY=VALUE, repeatable"),
        ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query),
        ("sort" = Option<String>, Query), ("filter" = Option<Vec<String>>, Query)),
    responses((status = 200, body = Vec<Object>)))]
pub async fn query_alerts(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Alert>>> {
    let mut p = Params::new(query.as_deref());
    let query = AlertQuery {
        status: p.parsed("status")?,
        severity: p.parsed("severity")?,
        min_severity: p.parsed("min_severity")?,
        source: p.one("source")?,
        start: p.time("start")?,
        end: p.time("end")?,
        labels: p.pairs("label")?,
        options: p.options()?,
    };
    p.finish()?;
    Ok(Json(app.manager.query_alerts(&query, None).await?))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path)), responses((status = 200, body = Object), (status = 404)))]
pub async fn get_alert(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Alert>> {
    Ok(Json(app.alert(&id).await?))
}

/// Who acts on an alert.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Who acknowledges or resolves; default: the token's name, or `api` without tokens.
    by: Option<String>,
}

/// Acknowledges an alert; answers it as stored.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path)), request_body(content = Option<ActionBody>),
    responses((status = 200, body = Object), (status = 404)))]
pub async fn acknowledge_alert(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Alert>> {
    let by = app.actor(&headers, body)?;
    let mut alert = app.alert(&id).await?;
    alert.acknowledge(by);
    app.manager.save_alert(&alert, None).await?;
    Ok(Json(alert))
}

/// Resolves an alert; answers it as stored.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path)), request_body(content = Option<ActionBody>),
    responses((status = 200, body = Object), (status = 404)))]
pub async fn resolve_alert(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Alert>> {
    let by = app.actor(&headers, body)?;
    let mut alert = app.alert(&id).await?;
    alert.resolve(by);
    app.manager.save_alert(&alert, None).await?;
    Ok(Json(alert))
}

/// Alerts like a text, a stored alert or a vector (where the backend has similarity search;
/// 501 otherwise). The body is `aimon::SimilarAlertsQuery` as JSON.
#[utoipa::path(post, path = "/api/v1/alerts/similar", tag = "alerts",
    request_body(content = Object, description = "{ \"target\": { \"text\": \"…\" } | { \"item\": \"alert id\" } | { \"vector\": […] }, \"limit\": 10, \"filter\": {…} }"),
    responses((status = 200, body = Vec<Object>), (status = 501)))]
pub async fn similar_alerts(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let query: SimilarAlertsQuery = body::json(&headers, body, app.limits.max_decompressed_bytes)?;
    let found = app.manager.find_similar_alerts(&query, None).await?;
    Ok(Json(json!(found)))
}

/// `POST /api/v1/agents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsBody {
    states: Vec<AgentStateIn>,
}

/// A heartbeat: an agent's state now (or at `last_heartbeat`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStateIn {
    /// The report's own id; default: `{agent_id}@{heartbeat in µs}`.
    id: Option<String>,
    agent_id: String,
    status: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    metrics: Metadata,
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Metadata,
    /// Default: now.
    last_heartbeat: Option<DateTime<Utc>>,
    embedding: Option<Vec<f32>>,
}

/// Stores agent states (the latest per agent wins).
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = AgentsBody,
    responses((status = 200, body = Written), (status = 400)))]
pub async fn write_agents(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Written>> {
    let request: AgentsBody = body::json(&headers, body, app.limits.max_decompressed_bytes)?;
    app.check_items(request.states.len())?;
    let states: Vec<AgentState> = request
        .states
        .into_iter()
        .map(|s| {
            let heartbeat = s.last_heartbeat.unwrap_or_else(aimon::time::now);
            let id = s
                .id
                .unwrap_or_else(|| format!("{}@{}", s.agent_id, aimon::time::to_micros(heartbeat)));
            let mut state = AgentState::new(id, s.agent_id, s.status);
            state.metrics = s.metrics;
            state.metadata = s.metadata;
            state.last_heartbeat = heartbeat;
            state.embedding = s.embedding;
            state
        })
        .collect();
    Ok(Json(
        app.manager.save_agent_states(&states, None).await?.into(),
    ))
}

/// The latest state of each agent (filters and paging as `aimon query agents`).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    params(("status" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "heartbeat at or after"),
        ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query),
        ("sort" = Option<String>, Query), ("filter" = Option<Vec<String>>, Query)),
    responses((status = 200, body = Vec<Object>)))]
pub async fn query_agents(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<AgentState>>> {
    let mut p = Params::new(query.as_deref());
    let query = AgentStateQuery {
        status: p.one("status")?,
        last_heartbeat_after: p.time("since")?,
        options: p.options()?,
    };
    p.finish()?;
    Ok(Json(app.manager.get_agent_states(&query, None).await?))
}

/// One agent's latest state.
#[utoipa::path(get, path = "/api/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)), responses((status = 200, body = Object), (status = 404)))]
pub async fn get_agent(
    State(app): State<App>,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<AgentState>> {
    app.manager
        .get_agent_state(&agent_id, None)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no agent {agent_id:?}")))
}

/// Agent states like a text, an agent's state or a vector (where the backend has similarity
/// search; 501 otherwise). The body is `aimon::SimilarAgentStatesQuery` as JSON.
#[utoipa::path(post, path = "/api/v1/agents/similar", tag = "agents",
    request_body(content = Object), responses((status = 200, body = Vec<Object>), (status = 501)))]
pub async fn similar_agents(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let query: SimilarAgentStatesQuery =
        body::json(&headers, body, app.limits.max_decompressed_bytes)?;
    let found = app.manager.find_similar_agent_states(&query, None).await?;
    Ok(Json(json!(found)))
}

/// Statistics of each backend (`aimon stats`).
#[utoipa::path(get, path = "/api/v1/stats", tag = "store", responses((status = 200, body = Object)))]
pub async fn stats(State(app): State<App>) -> ApiResult<Json<Value>> {
    let mut out = serde_json::Map::new();
    for name in app.manager.backend_names() {
        let stats = app.manager.get_database_stats(Some(&name)).await?;
        out.insert(name, json!(stats));
    }
    Ok(Json(Value::Object(out)))
}

/// The configured backends: name, type, capabilities and the kinds of data routed to each.
#[utoipa::path(get, path = "/api/v1/backends", tag = "store", responses((status = 200, body = Vec<Object>)))]
pub async fn backends(State(app): State<App>) -> ApiResult<Json<Value>> {
    let router = app.manager.router();
    let mut out = Vec::new();
    for name in app.manager.backend_names() {
        let backend = app.manager.get_backend(Some(&name))?;
        let routed: Vec<DataKind> = [DataKind::Metrics, DataKind::Alerts, DataKind::AgentStates]
            .into_iter()
            .filter(|kind| {
                router
                    .resolve(*kind, None)
                    .is_ok_and(|b| b.name() == backend.name())
            })
            .collect();
        out.push(json!({
            "name": name,
            "type": backend.backend_type(),
            "capabilities": backend.capabilities(),
            "routes": routed,
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// Removes expired data now (`aimon retention apply`); needs the `admin` scope.
#[utoipa::path(post, path = "/api/v1/retention", tag = "store", responses((status = 200, body = Object)))]
pub async fn retention(State(app): State<App>) -> ApiResult<Json<Value>> {
    let mut out = serde_json::Map::new();
    for name in app.manager.backend_names() {
        let report = app.manager.apply_retention(Some(&name)).await?;
        out.insert(name, json!(report));
    }
    Ok(Json(Value::Object(out)))
}

impl App {
    async fn alert(&self, id: &str) -> ApiResult<Alert> {
        self.manager
            .get_alert(id, None)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))
    }

    /// Who acts: the body's `by`, else the token's name, else `api`. An empty body is allowed.
    fn actor(&self, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult<String> {
        let bytes = body::bytes(body)?;
        let action = if bytes.is_empty() {
            ActionBody::default()
        } else {
            body::json(headers, Ok(bytes), self.limits.max_decompressed_bytes)?
        };
        Ok(action.by.unwrap_or_else(|| {
            self.tokens
                .check(headers, crate::auth::Scope::Write)
                .ok()
                .flatten()
                .unwrap_or("api")
                .to_owned()
        }))
    }

    /// 413 past the samples a request may carry.
    pub(crate) fn check_samples(&self, samples: usize) -> ApiResult<()> {
        if samples > self.limits.max_samples_per_request {
            return Err(ApiError::too_large(format!(
                "the request has {samples} samples; the limit is {}",
                self.limits.max_samples_per_request
            )));
        }
        Ok(())
    }

    /// 413 past the items (alerts, states) a request may carry: the sample limit.
    fn check_items(&self, items: usize) -> ApiResult<()> {
        if items > self.limits.max_samples_per_request {
            return Err(ApiError::too_large(format!(
                "the request has {items} items; the limit is {}",
                self.limits.max_samples_per_request
            )));
        }
        Ok(())
    }
}
