//! The v2 write path (`influxdb2://…`: `POST /api/v2/write?org&bucket&precision=us` with
//! `Authorization: Token`, gzip, batches) against a real server that accepts it:
//! VictoriaMetrics, which stores `measurement_field` series with the tags as labels and answers
//! `/api/v1/export`. It has no InfluxQL, so only writes are checked here (the README lists what
//! of 2.x/3.x is not verified).
#![cfg(feature = "influxdb")]

use aimon_core::Contract;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aimon_core::{ErrorKind, Metric, MetricType, MetricValue, StorageBackend, StorageConfig, time};
use aimon_influxdb::{ApiSettings, InfluxBackend, line};
use aimon_integration_tests::fixtures::{self, unique_namespace};
use chrono::{TimeDelta, TimeZone, Utc};

/// `GET path` over HTTP/1.0; the body.
fn http_get(authority: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(authority).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writes_reach_a_real_api_v2_write_server() {
    let Some(server) = fixtures::victoria_metrics().await else {
        return;
    };
    let authority = server.url.trim_start_matches("http://").to_owned();
    let namespace = unique_namespace("influxdb2");
    let config = StorageConfig::from_url(
        "v2",
        format!("influxdb2://{authority}?org=aimon&bucket={namespace}&batch_lines=7"),
    )
    .unwrap()
    .option("token", "not-checked-by-this-server");
    let store = Contract::new(InfluxBackend::connect(&config).await.unwrap());
    assert!(matches!(store.config().api, ApiSettings::V2 { .. }));
    // VictoriaMetrics answers `/ping` without InfluxDB's version header.
    assert_eq!(store.server().version, "unknown");
    // InfluxQL `DELETE` belongs to 1.x: a v2 store's buckets expire data themselves.
    let err = store.apply_retention().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

    // Millisecond timestamps: VictoriaMetrics keeps milliseconds.
    let t0 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let hostile = [
        "comma,v",
        "space v",
        "eq=v",
        "quote\"v",
        "back\\slash",
        "emoji 🚀",
        "50%",
    ];
    let mut metrics = Vec::new();
    for (s, id_suffix) in ["a", "b c", "d,e=f"].iter().enumerate() {
        let mut m = Metric::new(
            format!("{namespace}/{id_suffix}"),
            "v2.metric",
            MetricType::Gauge,
        );
        for i in 0..20i64 {
            m.values.push(
                MetricValue::new(
                    t0 + TimeDelta::milliseconds(i * 1_000 + s as i64),
                    i as f64 * 0.5 + s as f64,
                )
                .tag("host", hostile[i as usize % hostile.len()]),
            );
        }
        metrics.push(m);
    }
    let lines = aimon_influxdb::sample_lines(&metrics).unwrap();
    store.write_line_protocol(&lines, false).await.unwrap();
    let _ = http_get(&authority, "/internal/force_flush");

    let mut expected: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    for m in &metrics {
        for v in &m.values {
            expected.insert(
                (
                    m.id.clone(),
                    v.tags["host"].clone(),
                    time::to_micros(v.timestamp) / 1_000,
                ),
                v.value,
            );
        }
    }
    let selector = format!("{{__name__=\"samples_v\",sid=~\"{namespace}/.*\"}}");
    let mut got: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    for _ in 0..50 {
        got.clear();
        let body = http_get(
            &authority,
            &format!("/api/v1/export?match[]={}", percent(&selector)),
        );
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let sid = line::decode_tag_text(row["metric"]["sid"].as_str().unwrap()).into_owned();
            let host =
                line::decode_tag_text(row["metric"]["t.host"].as_str().unwrap()).into_owned();
            let values = row["values"].as_array().unwrap();
            let stamps = row["timestamps"].as_array().unwrap();
            for (v, ts) in values.iter().zip(stamps) {
                got.insert(
                    (sid.clone(), host.clone(), ts.as_i64().unwrap()),
                    v.as_f64().unwrap(),
                );
            }
        }
        if got.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(got, expected, "every sample, tags decoded exactly");

    // Written again (a retried batch): still one value per key.
    store.write_line_protocol(&lines, false).await.unwrap();
    let _ = http_get(&authority, "/internal/force_flush");
    let body = http_get(
        &authority,
        &format!("/api/v1/export?match[]={}", percent(&selector)),
    );
    let points: usize = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["values"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(points, expected.len(), "a rewritten key overwrites");
}

/// A v2 store whose server is gone: `Unavailable`, retryable, and the token nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writes_to_a_stopped_server_are_unavailable() {
    let port = fixtures::free_port().unwrap();
    let config =
        StorageConfig::from_url("v2", format!("influxdb2://127.0.0.1:{port}?org=o&bucket=b"))
            .unwrap()
            .option("token", "tok-s3cr3t");
    let err = InfluxBackend::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("tok-s3cr3t"));
}
