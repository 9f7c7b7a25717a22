//! Series and samples: writes, reads, queries and `metric_history`.
//!
//! - [`write`]: the line-protocol encoding of a batch and `save_metrics`;
//! - [`read`]: the series documents and samples as stored, `get_metric` and `query_metrics`;
//! - [`history`]: `metric_history`, aggregated in InfluxQL or downsampled in aimon.

use aimon_core::Tags;
use aimon_core::query::MicrosRange;
use aimon_core::time;

use crate::backend::{InfluxBackend, TAG_PREFIX};
use crate::line;

mod history;
mod read;
mod write;

pub use write::sample_lines;

/// Series ids per `OR` list in one statement.
const IDS_PER_STATEMENT: usize = 200;

/// A decoded sample: (timestamp µs, tags, value).
type Sample = (i64, Tags, f64);

/// The stored tag key of a sample tag.
pub(crate) fn tag_key(key: &str) -> String {
    format!("{TAG_PREFIX}{key}")
}

impl InfluxBackend {
    /// `WHERE` conditions on the stored tags for a tag filter.
    fn tag_conditions(tags: &Tags) -> String {
        tags.iter()
            .map(|(k, v)| {
                format!(
                    " AND {} = {}",
                    line::ident(&line::encode_tag_text(&tag_key(k))),
                    line::tag_literal(v)
                )
            })
            .collect()
    }

    /// The live lower bound of sample times: the query's start, raised to the TTL cutoff.
    fn live_range(&self, range: MicrosRange) -> MicrosRange {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        MicrosRange {
            start: range.start.max(cutoff.unwrap_or(i64::MIN)),
            end: range.end,
        }
    }
}

/// The metric calls, each in the file of its job: writes in `write.rs`, reads in `read.rs`,
/// history in `history.rs`.
#[async_trait::async_trait]
impl aimon_core::MetricDriver for InfluxBackend {
    async fn save_metrics(
        &self,
        batch: aimon_core::driver::MetricBatch<'_>,
    ) -> aimon_core::Result<aimon_core::WriteReport> {
        self.write_metrics(&batch).await
    }

    async fn get_metric(
        &self,
        id: aimon_core::driver::ValidId<'_>,
    ) -> aimon_core::Result<Option<aimon_core::Metric>> {
        self.read_metric(&id).await
    }

    async fn query_metrics(
        &self,
        query: aimon_core::driver::Selection<'_, aimon_core::MetricQuery>,
    ) -> aimon_core::Result<Vec<aimon_core::Metric>> {
        self.select_metrics(query).await
    }

    async fn metric_history(
        &self,
        query: aimon_core::driver::Valid<'_, aimon_core::HistoryQuery>,
    ) -> aimon_core::Result<Vec<aimon_core::HistorySeries>> {
        self.history(&query).await
    }
}
