//! Times the two ways `metric_history` can read chunks, on the same store in one process (the
//! crate docs' "Performance" figures): the load script leaving out chunks whose summary answers
//! alone (what `metric_history` does), and every chunk shipped and decoded in the client.
//! Each plan runs at two steps: 60 buckets over the last three hours (a bucket splits the
//! hour-long windows) and one-hour buckets over the last day (whole windows).
//!
//! ```sh
//! aimon --storage redis://127.0.0.1:6379 demo
//! cargo run --release -p aimon-redis --example history_plans -- redis://127.0.0.1:6379 aimon latency_ms
//! ```
use std::time::{Duration, Instant};

use aimon_core::{Aggregation, HistoryQuery, StorageConfig, time};
use aimon_redis::{HistoryPlan, RedisBackend};
use chrono::TimeDelta;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> aimon_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("a redis:// URL");
    let namespace = args.next().unwrap_or_else(|| "aimon".to_owned());
    let name = args
        .next()
        .unwrap_or_else(|| "aimon.bench.value".to_owned());
    let config = StorageConfig::from_url("bench", url)?.option("namespace", namespace.as_str());
    let store = RedisBackend::connect(&config).await?;
    let end = time::now();
    for (span, step) in [
        (TimeDelta::hours(3), TimeDelta::hours(3) / 60),
        (TimeDelta::hours(24), TimeDelta::hours(1)),
    ] {
        let query = HistoryQuery::new(&name, step, Aggregation::Avg).range(end - span, end);
        query.validate()?;
        let mut answers = Vec::new();
        for plan in [HistoryPlan::Summaries, HistoryPlan::DecodeAll] {
            let mut times = Vec::new();
            let mut answer = Vec::new();
            for _ in 0..11 {
                let t = Instant::now();
                answer = store.history_with(&query, plan).await?;
                times.push(t.elapsed());
            }
            let samples: u64 = answer
                .iter()
                .flat_map(|s| &s.buckets)
                .map(|b| b.count)
                .sum();
            println!(
                "{plan:?}: {} buckets of {} s over {samples} samples: {:.1} ms (median of 11)",
                span.num_seconds() / step.num_seconds(),
                step.num_seconds(),
                median(times).as_secs_f64() * 1e3
            );
            answers.push(answer);
        }
        assert_eq!(answers[0], answers[1], "both plans give the same answer");
    }
    Ok(())
}
