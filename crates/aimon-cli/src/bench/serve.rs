//! `aimon bench --serve`: `aimon serve`'s ingest against `save_metrics` on the same store, in
//! one run and one process.
//!
//! The server runs in this process on 127.0.0.1 (a free port) in front of the bench's store;
//! the load generator is this process too, so the HTTP figures carry the client's work on the
//! same two cores (request bodies are encoded before the clock starts; sending them and reading
//! the answers are timed). Each phase writes its own series (`bench-RUN-PHASE/…`), so no phase
//! overwrites another's samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aimon::{Metric, StorageManager};
use aimon_server::{Limits, Server, ServerConfig};
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Serialize;
use tokio::sync::oneshot;

use super::workload::Workload;
use super::{Latency, METRIC_NAME, latency};
use crate::cli::{BenchArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::footprint::Footprint;
use crate::output::{self, thousands};

/// One ingest phase: how many samples, how long, how fast.
#[derive(Debug, Serialize)]
struct Rate {
    samples: u64,
    seconds: f64,
    samples_per_second: f64,
    request_latency: Latency,
}

/// 1,000 concurrent clients of 10 samples each.
#[derive(Debug, Serialize)]
struct Crowd {
    clients: u64,
    errors: u64,
    requests: u64,
    backend_batches: u64,
    latency: Latency,
}

/// The steady load with an event-stream client attached.
#[derive(Debug, Serialize)]
struct Soak {
    seconds: u64,
    samples: u64,
    events_received: u64,
    rss_start_bytes: u64,
    rss_max_bytes: u64,
    rss_end_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    run: String,
    clients: u64,
    batch: u64,
    /// save_metrics of the series the JSON phase sends.
    direct: Rate,
    json_api: Rate,
    /// save_metrics of what the server maps the OTLP requests to.
    direct_otlp: Rate,
    otlp: Rate,
    /// The JSON API's rate over `direct` (target ≥ 0.7).
    json_ratio: f64,
    /// OTLP's rate over `direct_otlp` (target ≥ 0.7).
    otlp_ratio: f64,
    crowd: Crowd,
    store: Footprint,
}

pub async fn serve_bench(storage: &Storage, global: &Global, args: &BenchArgs) -> Result<()> {
    let backend = storage.manager.get_backend(storage.name())?;
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        limits: Limits {
            max_samples_per_request: (args.batch as usize).max(10_000),
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::bind(Arc::clone(&storage.manager), config)?;
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    // The soak runs alone, in a process that did nothing else, so its memory is the server's
    // (with the store's and a small load generator's).
    let result = if args.soak_seconds > 0 {
        soak_alone(&base, args).await.map(Err)
    } else {
        phases(storage, &base, args).await.map(Ok)
    };
    let _ = stop.send(());
    serving
        .await
        .map_err(|e| CliError::new(format!("the server task failed: {e}")))??;
    let store = Footprint::read(storage).await?;
    match result? {
        Ok(mut report) => {
            report.backend = backend.backend_type().to_string();
            report.store = store;
            print(&report, backend.backend_type(), global)
        }
        Err(soak) => {
            if global.json {
                return output::json(&serde_json::json!({ "soak": soak, "store": store }));
            }
            output::line(format!(
                "aimon serve on {}: soak of {} s, {} samples at 5,000 a second, {} events to \
                 an SSE client: RSS {} MiB at the start, {} MiB at most, {} MiB at the end",
                backend.backend_type(),
                soak.seconds,
                thousands(soak.samples),
                thousands(soak.events_received),
                soak.rss_start_bytes >> 20,
                soak.rss_max_bytes >> 20,
                soak.rss_end_bytes >> 20
            ));
            output::line(store.sentence(backend.backend_type()));
            Ok(())
        }
    }
}

async fn phases(storage: &Storage, base: &str, args: &BenchArgs) -> Result<Report> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .map_err(|e| CliError::new(format!("HTTP client: {e}")))?;
    let now = aimon::time::now();
    let run = now.timestamp_millis().to_string();
    let workload = |phase: &str| Workload::new(&format!("{run}-{phase}"), now, args);
    let clients = args.clients as usize;

    // save_metrics, called directly by `clients` concurrent writers.
    let direct = save_all(storage, batches(&workload("direct"), args), clients).await?;

    // The same shape of batches through POST /api/v1/metrics.
    let bodies: Vec<(Vec<u8>, u64)> = batches(&workload("json"), args)
        .into_iter()
        .map(|b| (json_body(&b), sample_count(&b)))
        .collect();
    let url = format!("{base}/api/v1/metrics");
    let json_api = post_all(&http, &url, "application/json", bodies, clients).await?;

    // And through OTLP/HTTP, protobuf, against save_metrics of what the server maps the same
    // requests to (another agent's series, the same shape): OTLP names one series per agent
    // and metric name, with the attributes as tags, which some stores write at another speed
    // than a hundred series.
    let otlp_batches = batches(&workload("otlp"), args);
    let agent = format!("bench-{run}-otlp-direct");
    let mapped: Vec<Arc<Vec<Metric>>> = otlp_batches
        .iter()
        .map(|b| {
            let request = ExportMetricsServiceRequest::decode(&otlp_body(b, &agent)[..])
                .expect("our own request");
            let limits = aimon_server::otlp::AttributeLimits::default();
            Arc::new(aimon_server::otlp::to_metrics(&request, &limits).metrics)
        })
        .collect();
    let direct_otlp = save_all(storage, mapped, clients).await?;
    let bodies: Vec<(Vec<u8>, u64)> = otlp_batches
        .iter()
        .map(|b| (otlp_body(b, &format!("bench-{run}-otlp")), sample_count(b)))
        .collect();
    let url = format!("{base}/v1/metrics");
    let otlp = post_all(&http, &url, "application/x-protobuf", bodies, clients).await?;

    let crowd = crowd(&http, base, &workload("crowd")).await?;
    Ok(Report {
        backend: String::new(),
        run,
        clients: args.clients,
        batch: args.batch,
        json_ratio: json_api.samples_per_second / direct.samples_per_second,
        otlp_ratio: otlp.samples_per_second / direct_otlp.samples_per_second,
        direct,
        direct_otlp,
        json_api,
        otlp,
        crowd,
        store: Footprint {
            size_bytes: None,
            samples: 0,
            bytes_per_sample: None,
            size_unknown: None,
        },
    })
}

/// The workload's samples in batches of `--batch`, one metric per series as an application
/// sends them.
fn batches(workload: &Workload, args: &BenchArgs) -> Vec<Arc<Vec<Metric>>> {
    (0..args.samples.div_ceil(args.batch))
        .map(|b| {
            let end = ((b + 1) * args.batch).min(args.samples);
            Arc::new(workload.batch(b * args.batch..end))
        })
        .collect()
}

/// Runs `work` over every item with `clients` concurrent workers; the rate is `samples` over
/// the wall time of the whole phase, the latency each call's.
async fn concurrently<T, F, Fut>(
    items: Vec<Arc<T>>,
    samples: u64,
    clients: usize,
    work: F,
) -> Result<Rate>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (items, next, work) = (Arc::clone(&items), Arc::clone(&next), Arc::clone(&work));
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(item) = items.get(i) else { break };
                    let t = Instant::now();
                    work(Arc::clone(item)).await?;
                    times.push(t.elapsed());
                }
                Ok::<_, String>(times)
            })
        })
        .collect();
    let mut times = Vec::new();
    for worker in workers {
        times.extend(
            worker
                .await
                .map_err(|e| CliError::new(format!("a writer failed: {e}")))?
                .map_err(CliError::new)?,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Rate {
        samples,
        seconds,
        samples_per_second: samples as f64 / seconds,
        request_latency: latency(&times),
    })
}

/// `save_metrics` of every batch, by `clients` concurrent callers.
async fn save_all(
    storage: &Storage,
    batches: Vec<Arc<Vec<Metric>>>,
    clients: usize,
) -> Result<Rate> {
    let samples = batches.iter().map(|b| sample_count(b)).sum();
    let manager = Arc::clone(&storage.manager);
    let name = storage.name().map(str::to_owned);
    concurrently(batches, samples, clients, move |batch: Arc<Vec<Metric>>| {
        let manager: Arc<StorageManager> = Arc::clone(&manager);
        let name = name.clone();
        async move {
            manager
                .save_metrics(&batch, name.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

fn sample_count(metrics: &[Metric]) -> u64 {
    metrics.iter().map(|m| m.values.len() as u64).sum()
}

/// POSTs every body (with the samples it holds) with `clients` concurrent clients; any answer
/// but 200 fails the phase, and so does a JSON answer that did not accept every sample.
async fn post_all(
    http: &reqwest::Client,
    url: &str,
    content_type: &'static str,
    bodies: Vec<(Vec<u8>, u64)>,
    clients: usize,
) -> Result<Rate> {
    let samples = bodies.iter().map(|(_, n)| n).sum::<u64>();
    let (http, url) = (http.clone(), url.to_owned());
    let bodies = bodies.into_iter().map(Arc::new).collect();
    concurrently(
        bodies,
        samples,
        clients,
        move |item: Arc<(Vec<u8>, u64)>| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (body, count) = item.as_ref();
                let answer = http
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                let status = answer.status();
                let text = answer.bytes().await.map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!(
                        "POST {url}: {status}: {}",
                        String::from_utf8_lossy(&text)
                    ));
                }
                if content_type == "application/json" {
                    let v: serde_json::Value =
                        serde_json::from_slice(&text).map_err(|e| e.to_string())?;
                    if v["accepted"].as_u64() != Some(*count) {
                        return Err(format!("POST {url}: accepted {} of {count}", v["accepted"]));
                    }
                }
                Ok(())
            }
        },
    )
    .await
}

/// The JSON API's body for `metrics`.
fn json_body(metrics: &[Metric]) -> Vec<u8> {
    let metrics: Vec<serde_json::Value> = metrics
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "name": m.name, "type": m.metric_type, "unit": m.unit,
                "values": m.values,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "metrics": metrics })).expect("JSON")
}

/// The same samples as one OTLP gauge of the agent `agent`, each point with its sample's tags.
fn otlp_body(metrics: &[Metric], agent: &str) -> Vec<u8> {
    let text = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    };
    let data_points = metrics
        .iter()
        .flat_map(|m| &m.values)
        .map(|v| NumberDataPoint {
            attributes: v.tags.iter().map(|(k, v)| text(k, v)).collect(),
            time_unix_nano: (aimon::time::to_micros(v.timestamp) as u64) * 1_000,
            value: Some(number_data_point::Value::AsDouble(v.value)),
            ..Default::default()
        })
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![text("gen_ai.agent.name", agent)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![OtlpMetric {
                    name: METRIC_NAME.to_owned(),
                    unit: "ms".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

/// The server's counter `name` from its `/metrics`.
async fn server_counter(http: &reqwest::Client, base: &str, name: &str) -> Result<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| CliError::new(format!("GET /metrics: {e}")))?
        .text()
        .await
        .map_err(|e| CliError::new(format!("GET /metrics: {e}")))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// 1,000 clients, each one request of 10 samples, all at once.
async fn crowd(http: &reqwest::Client, base: &str, workload: &Workload) -> Result<Crowd> {
    const CLIENTS: u64 = 1_000;
    let before = server_counter(http, base, "aimon_ingest_batches_total").await?;
    let url = format!("{base}/api/v1/metrics");
    let gate = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let body = json_body(&workload.batch(c * 10..c * 10 + 10));
            let (http, url, gate) = (http.clone(), url.clone(), Arc::clone(&gate));
            tokio::spawn(async move {
                gate.wait().await;
                let t = Instant::now();
                let ok = matches!(
                    http.post(&url).header("content-type", "application/json").body(body).send().await,
                    Ok(r) if r.status() == 200
                );
                (ok, t.elapsed())
            })
        })
        .collect();
    let (mut errors, mut times) = (0, Vec::new());
    for task in tasks {
        let (ok, took) = task
            .await
            .map_err(|e| CliError::new(format!("a client failed: {e}")))?;
        if !ok {
            errors += 1;
        }
        times.push(took);
    }
    let after = server_counter(http, base, "aimon_ingest_batches_total").await?;
    Ok(Crowd {
        clients: CLIENTS,
        errors,
        requests: CLIENTS,
        backend_batches: after - before,
        latency: latency(&times),
    })
}

/// Resident memory of this process (server, store and load generator), from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The soak, with its own client and workload.
async fn soak_alone(base: &str, args: &BenchArgs) -> Result<Soak> {
    let http = reqwest::Client::new();
    let now = aimon::time::now();
    let run = format!("{}-soak", now.timestamp_millis());
    soak(
        &http,
        base,
        &Workload::new(&run, now, args),
        args.soak_seconds,
    )
    .await
}

/// A steady 5,000 samples a second (ten requests of 500) for `seconds`, with an event-stream
/// client reading every event.
async fn soak(
    http: &reqwest::Client,
    base: &str,
    workload: &Workload,
    seconds: u64,
) -> Result<Soak> {
    let events = Arc::new(AtomicU64::new(0));
    let stream = http
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .map_err(|e| CliError::new(format!("GET /api/v1/events: {e}")))?;
    let counter = Arc::clone(&events);
    let reader = tokio::spawn(async move {
        let mut body = stream.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            let n = chunk.windows(7).filter(|w| w == b"event: ").count() as u64;
            counter.fetch_add(n, Ordering::Relaxed);
        }
    });
    let url = format!("{base}/api/v1/metrics");
    let rss_start = rss_bytes();
    let mut rss_max = rss_start;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0u64;
    let per_series = workload.samples.div_ceil(workload.series).max(1);
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        // Cycle through the workload's timestamps: later rounds overwrite earlier samples,
        // which keeps the store's size steady and the soak about the server.
        let first = (sent / 500 % per_series) * 500;
        let body = json_body(&workload.batch(first..first + 500));
        let answer = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| CliError::new(format!("soak: {e}")))?;
        if answer.status() != 200 {
            return Err(CliError::new(format!("soak: {}", answer.status())));
        }
        sent += 500;
        rss_max = rss_max.max(rss_bytes());
    }
    let rss_end = rss_bytes();
    reader.abort();
    Ok(Soak {
        seconds,
        samples: sent,
        events_received: events.load(Ordering::Relaxed),
        rss_start_bytes: rss_start,
        rss_max_bytes: rss_max,
        rss_end_bytes: rss_end,
    })
}

fn print(report: &Report, backend_type: aimon::StorageBackendType, global: &Global) -> Result<()> {
    if global.json {
        return output::json(report);
    }
    let rate = |label: &str, r: &Rate| {
        output::line(format!(
            "{label}: {} samples in {:.2} s, {} samples/s (request p50 {:.1} ms, p99 {:.1} ms)",
            thousands(r.samples),
            r.seconds,
            thousands(r.samples_per_second as u64),
            r.request_latency.p50_ms,
            r.request_latency.p99_ms
        ));
    };
    output::line(format!(
        "aimon serve on {} ({} concurrent writers, {} samples a request), run {}",
        report.backend, report.clients, report.batch, report.run
    ));
    rate("save_metrics, direct", &report.direct);
    rate("POST /api/v1/metrics (JSON)", &report.json_api);
    rate(
        "save_metrics of the OTLP mapping, direct",
        &report.direct_otlp,
    );
    rate("POST /v1/metrics (OTLP protobuf)", &report.otlp);
    output::line(format!(
        "Ratio to direct: JSON {:.2}×, OTLP {:.2}× (target ≥ 0.7×)",
        report.json_ratio, report.otlp_ratio
    ));
    let c = &report.crowd;
    output::line(format!(
        "{} concurrent clients × 10 samples: {} errors, {} requests in {} backend batches, \
         p50 {:.1} ms, p99 {:.1} ms",
        thousands(c.clients),
        c.errors,
        thousands(c.requests),
        thousands(c.backend_batches),
        c.latency.p50_ms,
        c.latency.p99_ms
    ));
    output::line(report.store.sentence(backend_type));
    Ok(())
}
