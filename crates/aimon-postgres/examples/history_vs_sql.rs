//! Times `metric_history` against the equivalent hand-written SQL on the same store, in one
//! process (the README's history figure):
//!
//! ```sh
//! aimon bench --storage "postgres://…/test?schema=S" --samples 1000000 --batch 50000
//! cargo run --release -p aimon-postgres --example history_vs_sql -- "postgres://…/test?schema=S" aimon.bench.value
//! ```
use aimon_core::Contract;
use std::time::{Duration, Instant};

use aimon_core::{Aggregation, HistoryQuery, StorageBackend, StorageConfig, time};
use aimon_postgres::PostgresBackend;
use chrono::TimeDelta;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> aimon_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("a postgres:// URL with ?schema=");
    let name = args
        .next()
        .unwrap_or_else(|| "aimon.bench.value".to_owned());
    let store =
        Contract::new(PostgresBackend::connect(&StorageConfig::from_url("bench", url)?).await?);
    let end = time::now();
    let start = end - TimeDelta::hours(3);
    let query = HistoryQuery::new(&name, TimeDelta::minutes(1), Aggregation::Avg).range(start, end);
    let sql = "SELECT date_bin(INTERVAL '1 minute', x.time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b, \
               avg(x.value), count(*) FROM samples x JOIN series s ON s.sid = x.sid \
               WHERE s.name = $1 AND x.time >= $2 AND x.time < $3 GROUP BY 1 ORDER BY 1";
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut samples = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let out = store.metric_history(&query).await?;
        ours.push(t.elapsed());
        samples = out
            .iter()
            .flat_map(|s| &s.buckets)
            .map(|b| b.count)
            .sum::<u64>();
        let t = Instant::now();
        let rows: Vec<(chrono::DateTime<chrono::Utc>, f64, i64)> = sqlx::query_as(sql)
            .bind(&name)
            .bind(start)
            .bind(end)
            .fetch_all(store.pool())
            .await
            .expect("hand-written SQL");
        theirs.push(t.elapsed());
        assert!(!rows.is_empty());
    }
    let (a, b) = (median(ours), median(theirs));
    println!(
        "metric_history avg, 1-minute step over {samples} samples: {:.1} ms; hand-written SQL {:.1} ms; ratio {:.2}",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}
