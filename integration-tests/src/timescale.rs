//! Helpers for the TimescaleDB checks (`tests/timescale.rs`, `tests/postgres_native.rs`).

use std::time::{Duration, Instant};

/// Stops TimescaleDB's scheduler from starting job `job` (a policy's background job) and waits
/// up to 20 s for a run in progress to end; `CALL run_job` still runs it. A check that counts
/// what its own retention or compression does pauses the policy first, so the background run
/// cannot race with it.
pub async fn pause_job(pool: &sqlx::PgPool, job: i32) {
    sqlx::query("SELECT alter_job($1, scheduled => FALSE)")
        .bind(job)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("pausing job {job}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: bool = sqlx::query_scalar(
            "SELECT coalesce(bool_or(job_status = 'Running'), FALSE) \
             FROM timescaledb_information.job_stats WHERE job_id = $1",
        )
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("the state of job {job}: {e}"));
        if !running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still running after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
