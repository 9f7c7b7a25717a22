//! [`InfluxBackend`]: the [`StorageBackend`] implementation.

use aimon_core::driver::Driver;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aimon_core::backend::{
    Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionMechanism, RetentionReport,
    StorageBackend, StorageEvent, TransferReport,
};
use aimon_core::{Error, Result, StorageBackendType, StorageConfig};
use async_trait::async_trait;

use crate::client::{Client, ServerInfo};
use crate::config::{ApiSettings, InfluxConfig};
use crate::line;

/// An InfluxDB database (v1) or bucket (v2) behind the [`StorageBackend`] trait.
pub struct InfluxBackend {
    pub(crate) config: Arc<InfluxConfig>,
    pub(crate) client: Client,
    pub(crate) server: ServerInfo,
    /// `created_at` (µs) of series this process has seen, so that a batch of known series
    /// needs no read before its write.
    pub(crate) created: Mutex<std::collections::HashMap<String, i64>>,
    events: LocalEvents,
}

impl fmt::Debug for InfluxBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxBackend")
            .field("config", &self.config)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The measurements aimon writes (see the crate docs for the layout).
pub(crate) const SAMPLES: &str = "samples";
pub(crate) const SERIES: &str = "series";
pub(crate) const ALERTS: &str = "alerts";
pub(crate) const AGENT_STATES: &str = "agent_states";
/// Sample tags are stored under this prefix, so no user tag can collide with `sid`.
pub(crate) const TAG_PREFIX: &str = "t.";

impl InfluxBackend {
    /// Opens the store an `influxdb` [`StorageConfig`] describes (see [`crate::config`]),
    /// creating its database and retention policies on a v1 server.
    pub async fn connect(config: &StorageConfig) -> Result<InfluxBackend> {
        let parsed = InfluxConfig::from_storage_config(config)
            .map_err(|e| e.with_operation("connect").with_backend(&config.name))?;
        Self::open(parsed).await
    }

    /// Opens the store `config` describes.
    pub async fn open(config: InfluxConfig) -> Result<InfluxBackend> {
        let name = config.name.clone();
        let display = config.display_url.clone();
        let fail = move |e: Error| {
            e.with_operation("connect")
                .with_backend(&name)
                .with_context("url", &display)
        };
        let config = Arc::new(config);
        let client = Client::new(config.clone()).map_err(&fail)?;
        tracing::debug!(backend = %config.name, url = %config.display_url, api = config.api.generation(), "opening influxdb");
        let server = client.ping().await.map_err(&fail)?;
        let backend = InfluxBackend {
            config,
            client,
            server,
            created: Mutex::new(Default::default()),
            events: LocalEvents::new(),
        };
        backend.prepare_schema().await.map_err(&fail)?;
        Ok(backend)
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &InfluxConfig {
        &self.config
    }

    /// What `/ping` reported when the backend opened.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// Drops this store's database (v1) and closes the backend. Public API for tests and tools
    /// that create throw-away stores, such as the `aimon bench --compare-curl` baseline.
    pub async fn drop_database(&self) -> Result<()> {
        if let ApiSettings::V1 { database, .. } = &self.config.api {
            self.client
                .query(&format!("DROP DATABASE {}", line::ident(database)))
                .await
                .map_err(|e| self.labelled("drop_database", e))?;
        }
        self.close().await
    }

    /// Runs raw InfluxQL against the store's database and returns the JSON series of each
    /// statement, for tools and tests. The caller quotes what it splices in ([`line::ident`],
    /// [`line::string`]).
    pub async fn influxql(&self, q: &str) -> Result<serde_json::Value> {
        let out = self
            .client
            .query(q)
            .await
            .map_err(|e| self.labelled("influxql", e))?;
        Ok(serde_json::Value::Array(
            out.into_iter()
                .map(|series| {
                    serde_json::Value::Array(
                        series
                            .into_iter()
                            .map(|s| {
                                serde_json::json!({
                                    "name": s.name, "tags": s.tags,
                                    "columns": s.columns, "values": s.values,
                                })
                            })
                            .collect(),
                    )
                })
                .collect(),
        ))
    }

    /// Posts line protocol as it is (gzip-compressed, in the configured batches) to the samples'
    /// retention policy, or with `metadata` to the metadata one: for loaders and benchmarks that
    /// prepare their own lines, and for tests that put foreign points in a store.
    pub async fn write_line_protocol(&self, body: &str, metadata: bool) -> Result<()> {
        let mut lines = crate::client::LineBuffer::default();
        for l in body.lines().filter(|l| !l.trim().is_empty()) {
            lines.text.push_str(l);
            lines.end_line();
        }
        let target = if metadata {
            crate::client::Target::Meta
        } else {
            crate::client::Target::Samples
        };
        self.client
            .write_lines(target, &lines)
            .await
            .map_err(|e| self.labelled("write_line_protocol", e))
    }

    /// Labels an error of one of this driver's own tool methods (calls through the contract
    /// are labelled by it).
    fn labelled(&self, operation: &'static str, err: Error) -> Error {
        err.with_operation(operation)
            .with_backend(&self.config.name)
    }

    pub(crate) fn publish(&self, event: StorageEvent) {
        self.events.publish(event);
    }

    /// `FROM` target of a measurement: `"db"."rp"."m"` (v1) or `"bucket".."m"` (v2, the
    /// bucket's default mapping).
    pub(crate) fn from(&self, measurement: &str) -> String {
        let meta = measurement != SAMPLES;
        match &self.config.api {
            ApiSettings::V1 {
                database,
                retention_policy,
                meta_retention_policy,
                ..
            } => format!(
                "{}.{}.{}",
                line::ident(database),
                line::ident(if meta {
                    meta_retention_policy
                } else {
                    retention_policy
                }),
                line::ident(measurement)
            ),
            ApiSettings::V2 {
                bucket,
                meta_bucket,
                ..
            } => format!(
                "{}..{}",
                line::ident(if meta { meta_bucket } else { bucket }),
                line::ident(measurement)
            ),
        }
    }
}

/// `time >= lo AND time < hi` in nanoseconds, the form every InfluxDB version reads.
pub(crate) fn time_range(start_micros: i64, end_micros: i64) -> String {
    format!(
        "time >= {} AND time < {}",
        start_micros.saturating_mul(1000),
        end_micros.saturating_mul(1000)
    )
}

/// `("k" = 'a' OR "k" = 'b' …)` over tag values (encoded as stored).
pub(crate) fn any_of(tag: &str, values: &[&str]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| format!("{} = {}", line::ident(tag), line::tag_literal(v)))
        .collect();
    format!("({})", parts.join(" OR "))
}

/// The column `doc` of every row, parsed as `T`.
pub(crate) fn docs<T: serde::de::DeserializeOwned>(
    series: &[crate::client::Series],
    what: &str,
) -> Result<Vec<(i64, T)>> {
    let mut out = Vec::new();
    for s in series {
        let (Some(t), Some(d)) = (
            s.column("time"),
            s.column("doc").or_else(|| s.column("last")),
        ) else {
            continue;
        };
        for row in &s.values {
            let Some(text) = row.get(d).and_then(|v| v.as_str()) else {
                continue;
            };
            let time = row
                .get(t)
                .and_then(crate::client::cell_i64)
                .unwrap_or_default();
            let item =
                serde_json::from_str(text).map_err(|e| Error::malformed(what).with_source(e))?;
            out.push((time, item));
        }
    }
    Ok(out)
}

#[async_trait]
impl Driver for InfluxBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Influxdb
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: true,
            pub_sub: true,
            cross_process_events: false,
            native_backup: crate::backup::native_available(&self.config),
            similarity_search: false,
            agent_state_history: false,
            retention: RetentionMechanism::RetentionPolicy,
        }
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.sweep().await
    }

    async fn backup_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        self.native_backup(path).await
    }

    async fn restore_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        self.native_restore(store, path).await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.database_stats().await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        Ok(self.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        tracing::debug!(backend = %self.config.name, "closing the influxdb backend");
        Ok(())
    }
}
