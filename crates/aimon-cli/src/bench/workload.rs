//! The metrics a bench run writes, shared by aimon's ingest and the baselines that load the
//! same samples.

use chrono::TimeDelta;

use aimon::{Metric, MetricType, MetricValue, Tags};

use super::METRIC_NAME;
use crate::cli::BenchArgs;

/// The samples a bench run writes: `samples` values spread round-robin over `series` series,
/// all within the last hour. aimon's ingest and the `sqlite3` baseline read the same ones.
pub(super) struct Workload {
    pub(super) samples: u64,
    pub(super) series: u64,
    pub(super) start: chrono::DateTime<chrono::Utc>,
    pub(super) spacing_us: i64,
    pub(super) ids: Vec<String>,
    tags: Vec<Tags>,
}

impl Workload {
    pub(super) fn new(run: &str, now: chrono::DateTime<chrono::Utc>, args: &BenchArgs) -> Self {
        let series = args.series.min(args.samples);
        let per_series = args.samples.div_ceil(series);
        // Keep every sample within the last hour, at most one second apart.
        let spacing_us = (3_600_000_000 / per_series as i64).clamp(1, 1_000_000);
        Workload {
            samples: args.samples,
            series,
            start: now - TimeDelta::microseconds(spacing_us * per_series as i64),
            spacing_us,
            ids: (0..series)
                .map(|s| format!("bench-{run}/s{s:04}"))
                .collect(),
            tags: (0..series)
                .map(|s| {
                    Tags::from([
                        ("run".to_owned(), run.to_owned()),
                        ("series".to_owned(), format!("s{s:04}")),
                        ("host".to_owned(), format!("host-{}", s % 10)),
                    ])
                })
                .collect(),
        }
    }

    /// Each series' tags as a quoted CSV field of canonical JSON, for the baselines' files.
    pub(super) fn csv_tags(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("\"{}\"", aimon::model::tags_json(t).replace('"', "\"\"")))
            .collect()
    }

    /// Each series' tags as canonical JSON.
    pub(super) fn tags_json(&self) -> Vec<String> {
        self.tags.iter().map(aimon::model::tags_json).collect()
    }

    /// Sample `i`: its series index, timestamp and value.
    pub(super) fn sample(&self, i: u64) -> (usize, chrono::DateTime<chrono::Utc>, f64) {
        let s = (i % self.series) as usize;
        let seq = (i / self.series) as i64;
        let timestamp = self.start + TimeDelta::microseconds(seq * self.spacing_us);
        (s, timestamp, 100.0 + (i % 97) as f64 * 1.5)
    }

    /// Samples `range` grouped into one metric per series, as an application would send them.
    pub(super) fn batch(&self, range: std::ops::Range<u64>) -> Vec<Metric> {
        let mut metrics: Vec<Metric> = Vec::new();
        let mut index = vec![usize::MAX; self.series as usize];
        for i in range {
            let (s, timestamp, value) = self.sample(i);
            if index[s] == usize::MAX {
                index[s] = metrics.len();
                let mut m = Metric::new(self.ids[s].clone(), METRIC_NAME, MetricType::Gauge);
                m.unit = Some("ms".to_owned());
                metrics.push(m);
            }
            metrics[index[s]].values.push(MetricValue {
                timestamp,
                value,
                tags: self.tags[s].clone(),
            });
        }
        metrics
    }
}
