//! What a store's samples cost on disk or in memory: the size `stats` reports and that size
//! per sample, as `aimon stats`, `aimon bench` and `aimon demo` print them.

use serde::Serialize;

use crate::config::Storage;
use crate::error::Result;
use crate::output::thousands;

/// A store's size and its bytes per sample, read from its `stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footprint {
    /// The store's size as the backend measures it (see each driver's crate docs); `None`
    /// where it cannot tell.
    pub size_bytes: Option<u64>,
    /// The live samples of the whole store (earlier runs included), which the size covers.
    pub samples: u64,
    /// `size_bytes / samples`; `None` when either is unknown or zero samples.
    pub bytes_per_sample: Option<f64>,
    /// Why the size is unknown, when the backend said (`extra.size_bytes_unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_unknown: Option<String>,
}

impl Footprint {
    pub fn of(stats: &aimon::DatabaseStats) -> Self {
        Footprint {
            size_bytes: stats.size_bytes,
            samples: stats.samples,
            bytes_per_sample: stats.bytes_per_sample(),
            size_unknown: stats
                .extra
                .get("size_bytes_unknown")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        }
    }

    /// The footprint of the store a command wrote into, read after its writes.
    pub async fn read(storage: &Storage) -> Result<Self> {
        let stats = storage.manager.get_database_stats(storage.name()).await?;
        Ok(Self::of(&stats))
    }

    /// One line for a report: `Store: 48.2 MiB for 1,036,800 samples, 46.6 bytes/sample`.
    pub fn sentence(&self, backend_type: aimon::StorageBackendType) -> String {
        match (self.size_bytes, self.bytes_per_sample) {
            (Some(size), Some(per)) => format!(
                "Store: {} for {} samples, {} bytes/sample{}",
                bytes(size),
                thousands(self.samples),
                per_sample(per),
                how(backend_type)
            ),
            (Some(size), None) => format!("Store: {} and no sample", bytes(size)),
            (None, _) => format!(
                "Store size: not reported by the {backend_type} backend{}",
                self.size_unknown
                    .as_deref()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// What the figure counts, where a reader could take it for something else.
fn how(backend_type: aimon::StorageBackendType) -> &'static str {
    use aimon::StorageBackendType as T;
    match backend_type {
        // No checkpoint needed: the page count includes committed pages still in the WAL.
        T::Sqlite => " (page_count × page_size, pages still in the WAL included)",
        T::Redis => " (MEMORY USAGE of the namespace's keys)",
        T::Postgres | T::Timescale => " (the schema's relations, indexes and TOAST included)",
        T::Influxdb => " (the database's shards: TSM files and WAL)",
        T::Qdrant => " (blocks allocated to the store's directory)",
        _ => "",
    }
}

/// A byte count in binary units with one decimal: `512 B`, `4.0 KiB`, `48.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Bytes per sample with a sensible precision: `46.6`, `2.35`, `1,024`.
pub fn per_sample(v: f64) -> String {
    if v >= 1_000.0 {
        thousands(v.round() as u64)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(50_593_792), "48.2 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn per_sample_keeps_three_significant_figures_or_so() {
        assert_eq!(per_sample(46.61), "46.6");
        assert_eq!(per_sample(2.345), "2.35");
        assert_eq!(per_sample(1024.4), "1,024");
    }

    fn footprint(size_bytes: Option<u64>, samples: u64) -> Footprint {
        Footprint {
            size_bytes,
            samples,
            bytes_per_sample: size_bytes
                .filter(|_| samples > 0)
                .map(|s| s as f64 / samples as f64),
            size_unknown: None,
        }
    }

    #[test]
    fn a_known_size_is_shown_with_the_bytes_per_sample() {
        let line =
            footprint(Some(50_593_792), 1_036_800).sentence(aimon::StorageBackendType::Sqlite);
        assert!(
            line.starts_with("Store: 48.2 MiB for 1,036,800 samples, 48.8 bytes/sample"),
            "{line}"
        );
    }

    #[test]
    fn an_unknown_size_says_so_and_why() {
        let mut f = footprint(None, 10);
        assert_eq!(
            f.sentence(aimon::StorageBackendType::Memory),
            "Store size: not reported by the memory backend"
        );
        f.size_unknown = Some("no SHOW STATS".into());
        assert!(
            f.sentence(aimon::StorageBackendType::Influxdb)
                .ends_with("(no SHOW STATS)")
        );
    }
}
