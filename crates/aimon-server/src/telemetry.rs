//! The server's own metrics, served at `GET /metrics` in the Prometheus text format.
//!
//! Each server has its own recorder (not the process-wide one of the `metrics` crate), so
//! several servers in one process (the tests) count apart.

use std::time::Duration;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// Request latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The recorder and the handles the server updates.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    /// Samples stored through the ingest queue.
    pub samples_ingested: Counter,
    /// Backend batches the ingest queue stored (compare with the request count).
    pub batches: Counter,
    /// Backend calls that failed.
    pub backend_errors: Counter,
    /// Requests answered 503 because the ingest queue was full.
    pub rejected_busy: Counter,
    /// Samples waiting in the ingest queue.
    pub queue_depth: Gauge,
    /// Event-stream clients dropped for falling behind.
    pub slow_consumers: Counter,
}

impl Telemetry {
    /// A recorder with every series registered at zero.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("aimon_http_request_duration_seconds".to_owned()),
                &LATENCY_BUCKETS,
            )
            .expect("non-empty buckets")
            .build_recorder();
        for (name, help) in [
            (
                "aimon_samples_ingested_total",
                "Samples stored through the ingest queue.",
            ),
            (
                "aimon_ingest_batches_total",
                "Backend batches the ingest queue stored.",
            ),
            ("aimon_backend_errors_total", "Backend batches that failed."),
            (
                "aimon_ingest_rejected_busy_total",
                "Requests answered 503 because the ingest queue was full.",
            ),
            (
                "aimon_events_slow_consumers_dropped_total",
                "Event-stream clients dropped for falling behind.",
            ),
            (
                "aimon_http_requests_total",
                "HTTP requests answered, by method, route and status.",
            ),
        ] {
            recorder.describe_counter(name.into(), None, help.into());
        }
        recorder.describe_gauge(
            "aimon_ingest_queue_samples".into(),
            None,
            "Samples waiting in the ingest queue.".into(),
        );
        recorder.describe_histogram(
            "aimon_http_request_duration_seconds".into(),
            Some(metrics::Unit::Seconds),
            "Time to answer an HTTP request, by method and route.".into(),
        );
        let counter = |name: &'static str| recorder.register_counter(&Key::from_name(name), &META);
        Telemetry {
            samples_ingested: counter("aimon_samples_ingested_total"),
            batches: counter("aimon_ingest_batches_total"),
            backend_errors: counter("aimon_backend_errors_total"),
            rejected_busy: counter("aimon_ingest_rejected_busy_total"),
            slow_consumers: counter("aimon_events_slow_consumers_dropped_total"),
            queue_depth: recorder
                .register_gauge(&Key::from_name("aimon_ingest_queue_samples"), &META),
            recorder,
        }
    }

    /// Counts one answered request of `route` (the route's template, so the label set stays
    /// bounded) and records its latency.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = vec![
            Label::new("method", method.to_owned()),
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        self.recorder
            .register_counter(&Key::from_parts("aimon_http_requests_total", labels), &META)
            .increment(1);
        let labels = vec![
            Label::new("method", method.to_owned()),
            Label::new("route", route.to_owned()),
        ];
        self.recorder
            .register_histogram(
                &Key::from_parts("aimon_http_request_duration_seconds", labels),
                &META,
            )
            .record(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_counters_render() {
        let t = Telemetry::new();
        t.samples_ingested.increment(5);
        t.request("POST", "/api/v1/metrics", 200, Duration::from_millis(3));
        let text = t.render();
        assert!(text.contains("aimon_samples_ingested_total 5"), "{text}");
        assert!(
            text.contains(
                "aimon_http_requests_total{method=\"POST\",route=\"/api/v1/metrics\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("aimon_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
