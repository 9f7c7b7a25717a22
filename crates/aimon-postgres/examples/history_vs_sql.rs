//! Times `metric_history` against hand-written SQL over the chunks' summary columns on the
//! same store, in one process (the README's history figure):
//!
//! ```sh
//! aimon --storage "postgres://…/test?schema=S" demo
//! cargo run --release -p aimon-postgres --example history_vs_sql -- \
//!     "postgres://…/test?schema=S" agent.latency_ms 24 30
//! ```
//!
//! Arguments: the store's URL, the metric name, the hours back from now to query and the step
//! in minutes (a multiple of the ten-minute chunk window, so that buckets cover whole chunks
//! and the SQL over the summaries answers them). The SQL is what an expert would write over
//! the native layout: one `GROUP BY` of the summaries of the chunks in range; it ignores the
//! open window's head rows and the overwrites between fragments, which aimon folds in, so it
//! is a lower bound of the work, not an equivalent answer. A second hand-written query adds
//! the head's rows (a `UNION ALL` of their `GROUP BY`), which gives aimon's answer.
use aimon_core::Contract;
use std::time::{Duration, Instant};

use aimon_core::{Aggregation, HistoryQuery, StorageBackend, StorageConfig, time};
use aimon_postgres::PostgresBackend;
use chrono::{DateTime, TimeDelta, Utc};

/// One timed run of a hand-written history query (`$1` the name, `$2`/`$3` the range, `$4` the
/// step in minutes): its time and the samples its buckets count.
async fn hand_written(
    pool: &sqlx::PgPool,
    sql: &'static str,
    (name, start, end, step_minutes): (&str, DateTime<Utc>, DateTime<Utc>, i64),
) -> (Duration, i64) {
    let t = Instant::now();
    let rows: Vec<(DateTime<Utc>, f64, i64)> = sqlx::query_as(sql)
        .bind(name)
        .bind(start)
        .bind(end)
        .bind(step_minutes)
        .fetch_all(pool)
        .await
        .expect("hand-written SQL");
    (t.elapsed(), rows.iter().map(|r| r.2).sum())
}

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
    let hours: i64 = args.next().map_or(24, |h| h.parse().expect("hours"));
    let step_minutes: i64 = args.next().map_or(30, |m| m.parse().expect("step minutes"));
    let store =
        Contract::new(PostgresBackend::connect(&StorageConfig::from_url("bench", url)?).await?);
    let end = time::now();
    let start = end - TimeDelta::hours(hours);
    let step = TimeDelta::minutes(step_minutes);
    let query = HistoryQuery::new(&name, step, Aggregation::Avg).range(start, end);
    let sql = "SELECT date_bin($4::bigint * INTERVAL '1 minute', c.window_start, TIMESTAMPTZ 'epoch') AS b, \
               sum(c.sum + c.sum_comp) / sum(c.count), sum(c.count)::bigint \
               FROM chunks c JOIN series_tagsets t ON t.tsid = c.tsid JOIN series s ON s.sid = t.sid \
               WHERE s.name = $1 AND c.window_start >= $2 AND c.window_start < $3 GROUP BY 1 ORDER BY 1";
    // The same, plus the head's rows (the open window's samples): the answer aimon gives.
    let with_head = "SELECT b, sum(s) / sum(n), sum(n)::bigint FROM (\
               SELECT date_bin($4::bigint * INTERVAL '1 minute', c.window_start, TIMESTAMPTZ 'epoch') AS b, \
               sum(c.sum + c.sum_comp) AS s, sum(c.count) AS n \
               FROM chunks c JOIN series_tagsets t ON t.tsid = c.tsid JOIN series s ON s.sid = t.sid \
               WHERE s.name = $1 AND c.window_start >= $2 AND c.window_start < $3 GROUP BY 1 \
               UNION ALL SELECT date_bin($4::bigint * INTERVAL '1 minute', x.time, TIMESTAMPTZ 'epoch'), \
               sum(x.value), count(*) \
               FROM samples x JOIN series_tagsets t ON t.tsid = x.tsid JOIN series s ON s.sid = t.sid \
               WHERE s.name = $1 AND x.time >= $2 AND x.time < $3 GROUP BY 1) u GROUP BY 1 ORDER BY 1";
    let (mut ours, mut theirs, mut theirs_head) = (Vec::new(), Vec::new(), Vec::new());
    let (mut samples, mut summarized, mut buckets, mut with_head_samples) = (0, 0, 0, 0);
    // The three queries take turns at going first: a query that runs right after another
    // finds the pages that one touched in the cache, so a fixed order favours the later ones.
    for i in 0..102 {
        let run = (name.as_str(), start, end, step_minutes);
        for turn in 0..3 {
            match (i + turn) % 3 {
                0 => {
                    let t = Instant::now();
                    let out = store.metric_history(&query).await?;
                    ours.push(t.elapsed());
                    samples = out
                        .iter()
                        .flat_map(|s| &s.buckets)
                        .map(|b| b.count)
                        .sum::<u64>();
                    buckets = out.iter().map(|s| s.buckets.len()).sum::<usize>();
                }
                1 => {
                    let (took, counted) = hand_written(store.pool(), sql, run).await;
                    theirs.push(took);
                    summarized = counted;
                }
                _ => {
                    let (took, counted) = hand_written(store.pool(), with_head, run).await;
                    theirs_head.push(took);
                    with_head_samples = counted;
                }
            }
        }
    }
    let (a, b, c) = (median(ours), median(theirs), median(theirs_head));
    println!(
        "metric_history avg, {step_minutes}-minute step over {hours} h: {buckets} buckets, \
         {samples} samples: {:.2} ms p50; hand-written SQL over the summaries ({summarized} \
         samples in chunks) {:.2} ms p50, ratio {:.2}; with the head's rows too \
         ({with_head_samples} samples) {:.2} ms p50, ratio {:.2}",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64(),
        c.as_secs_f64() * 1e3,
        a.as_secs_f64() / c.as_secs_f64()
    );
    Ok(())
}
