//! Rule 6: retention; semantics.md "Retention". TTLs of 2 s and real sleeps: the only sleeps of
//! the suite.

use std::time::{Duration, Instant};

use aimon_core::retention::{AGENT_STATE_TTL_OPTION, ALERT_TTL_OPTION, METRIC_TTL_OPTION};
use aimon_core::{
    AgentStateQuery, Aggregation, AlertQuery, AlertStatus, HistoryQuery, MetricQuery, MetricValue,
    RetentionMechanism, RetentionReport, time,
};
use chrono::{DateTime, TimeDelta, Utc};

use super::support::*;
use crate::fixtures::Fixture;

const SHORT_TTL: u64 = 2;

fn short_ttls() -> [(&'static str, serde_json::Value); 3] {
    [
        ttl(METRIC_TTL_OPTION, SHORT_TTL),
        ttl(ALERT_TTL_OPTION, SHORT_TTL),
        ttl(AGENT_STATE_TTL_OPTION, SHORT_TTL),
    ]
}

fn hour_ttls() -> [(&'static str, serde_json::Value); 3] {
    [
        ttl(METRIC_TTL_OPTION, 3600),
        ttl(ALERT_TTL_OPTION, 3600),
        ttl(AGENT_STATE_TTL_OPTION, 3600),
    ]
}

/// Sleeps until data stamped `written` has certainly expired under the short TTL.
async fn sleep_past_ttl(written: DateTime<Utc>) {
    let deadline = written + TimeDelta::milliseconds(SHORT_TTL as i64 * 1000 + 600);
    loop {
        let now = time::now();
        if now > deadline {
            return;
        }
        let left = (deadline - now).to_std().unwrap_or_default();
        tokio::time::sleep(left + Duration::from_millis(20)).await;
    }
}

/// Whether a check written at `started` can still assert that short-TTL data is live (on a very
/// loaded machine it may already have expired; the check then skips that half).
fn still_fresh(started: Instant) -> bool {
    started.elapsed() < Duration::from_millis(1200)
}

/// Samples that arrive already expired are counted in `WriteReport::expired` and not stored; a
/// series whose samples and `updated_at` are all expired is not created.
pub async fn already_expired_samples_are_counted_not_stored(fixture: &Fixture) {
    let store = fixture.open(&hour_ttls()).await;
    let now = time::now();
    let mut live = series("live", "n");
    live.updated_at = now;
    live.values = vec![
        sample(0, 1.0),
        MetricValue::new(now, 2.0),
        sample(60, 3.0),
        MetricValue::new(now + TimeDelta::hours(1), 4.0),
    ];
    let dead = series("dead", "n").with_value(sample(0, 5.0));
    let report = store.save_metrics(&[live, dead]).await.unwrap();
    assert_eq!((report.written, report.expired), (2, 3));
    let back = store.get_metric("live").await.unwrap().unwrap();
    let values: Vec<f64> = back.values.iter().map(|v| v.value).collect();
    assert_eq!(values, [2.0, 4.0]);
    assert_eq!(store.get_metric("dead").await.unwrap(), None);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples), (1, 2));
}

/// Alerts whose `updated_at` is past the TTL are counted, not stored.
pub async fn already_expired_alerts_are_counted_not_stored(fixture: &Fixture) {
    let store = fixture.open(&hour_ttls()).await;
    let mut fresh = alert("fresh", aimon_core::AlertSeverity::High, 0);
    fresh.updated_at = time::now();
    // start_time is old but updated_at is what ages an alert.
    let stale = alert("stale", aimon_core::AlertSeverity::High, 0);
    let report = store.save_alerts(&[fresh.clone(), stale]).await.unwrap();
    assert_eq!((report.written, report.expired), (1, 1));
    assert_eq!(store.get_alert("stale").await.unwrap(), None);
    assert_eq!(
        store.query_alerts(&AlertQuery::new()).await.unwrap(),
        vec![fresh]
    );
    assert_eq!(store.stats().await.unwrap().alerts, 1);
}

/// Agent states whose `last_heartbeat` is past the TTL are counted, not stored.
pub async fn already_expired_agent_states_are_counted_not_stored(fixture: &Fixture) {
    let store = fixture.open(&hour_ttls()).await;
    let mut fresh = state("f", "agent-f", "running", 0);
    fresh.last_heartbeat = time::now();
    let stale = state("s", "agent-s", "running", 0);
    let report = store
        .save_agent_states(&[fresh.clone(), stale])
        .await
        .unwrap();
    assert_eq!((report.written, report.expired), (1, 1));
    assert_eq!(store.get_agent_state("agent-s").await.unwrap(), None);
    assert_eq!(
        store
            .get_agent_states(&AgentStateQuery::new())
            .await
            .unwrap(),
        vec![fresh]
    );
    assert_eq!(store.stats().await.unwrap().agent_states, 1);
}

/// Samples that expire while stored are never returned by any read — `get_metric`,
/// `query_metrics`, `metric_history`, stats — even before `apply_retention`.
pub async fn expired_samples_are_never_read(fixture: &Fixture) {
    let store = fixture.open(&short_ttls()).await;
    let started = Instant::now();
    let now = time::now();
    let later = now + TimeDelta::hours(1);
    let mut mixed = series("mixed", "ttl.metric");
    mixed.updated_at = now;
    mixed.values = vec![MetricValue::new(now, 1.0), MetricValue::new(later, 2.0)];
    let mut gone = series("gone", "ttl.metric");
    gone.updated_at = now;
    gone.values = vec![MetricValue::new(now, 3.0).tag("k", "v")];
    store.save_metrics(&[mixed, gone]).await.unwrap();
    if still_fresh(started) {
        assert!(
            store.get_metric("gone").await.unwrap().is_some(),
            "live before the TTL"
        );
    }
    sleep_past_ttl(now).await;

    assert_eq!(store.get_metric("gone").await.unwrap(), None);
    let back = store
        .get_metric("mixed")
        .await
        .unwrap()
        .expect("has a live sample");
    assert_eq!(back.values, vec![MetricValue::new(later, 2.0)]);
    let all = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(metric_ids(&all), ["mixed"]);
    assert_eq!(all[0].values.len(), 1);
    let around_now = store
        .query_metrics(
            &MetricQuery::new().range(now - TimeDelta::seconds(1), now + TimeDelta::seconds(1)),
        )
        .await
        .unwrap();
    assert!(around_now.is_empty(), "{around_now:?}");
    let tagged = store
        .query_metrics(&MetricQuery::new().tag("k", "v"))
        .await
        .unwrap();
    assert!(tagged.is_empty(), "{tagged:?}");
    let history = store
        .metric_history(&HistoryQuery::new(
            "ttl.metric",
            TimeDelta::days(1),
            Aggregation::Count,
        ))
        .await
        .unwrap();
    let counted: u64 = history
        .iter()
        .flat_map(|s| &s.buckets)
        .map(|b| b.count)
        .sum();
    assert_eq!(counted, 1, "{history:?}");
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples), (1, 1));
}

/// Alerts that expire while stored are never returned, by `get_alert`, `query_alerts` with any
/// filter, or stats.
pub async fn expired_alerts_are_never_read(fixture: &Fixture) {
    let store = fixture.open(&short_ttls()).await;
    let started = Instant::now();
    let now = time::now();
    let mut gone = alert("gone", aimon_core::AlertSeverity::Critical, 0);
    gone.updated_at = now;
    let mut kept = alert("kept", aimon_core::AlertSeverity::Low, 0);
    kept.updated_at = now + TimeDelta::hours(1);
    store.save_alerts(&[gone, kept.clone()]).await.unwrap();
    if still_fresh(started) {
        assert!(
            store.get_alert("gone").await.unwrap().is_some(),
            "live before the TTL"
        );
    }
    sleep_past_ttl(now).await;
    assert_eq!(store.get_alert("gone").await.unwrap(), None);
    assert_eq!(
        store.query_alerts(&AlertQuery::new()).await.unwrap(),
        vec![kept.clone()]
    );
    let active = store
        .query_alerts(
            &AlertQuery::new()
                .status(AlertStatus::Active)
                .min_severity(aimon_core::AlertSeverity::Info),
        )
        .await
        .unwrap();
    assert_eq!(alert_ids(&active), ["kept"]);
    assert_eq!(store.stats().await.unwrap().alerts, 1);
}

/// Agent states that expire while stored are never returned, and a newer state for the agent
/// is accepted again.
pub async fn expired_agent_states_are_never_read(fixture: &Fixture) {
    let store = fixture.open(&short_ttls()).await;
    let started = Instant::now();
    let now = time::now();
    let mut gone = state("g", "agent-g", "running", 0);
    gone.last_heartbeat = now;
    let mut kept = state("k", "agent-k", "running", 0);
    kept.last_heartbeat = now + TimeDelta::hours(1);
    store
        .save_agent_states(&[gone, kept.clone()])
        .await
        .unwrap();
    if still_fresh(started) {
        assert!(
            store.get_agent_state("agent-g").await.unwrap().is_some(),
            "live before the TTL"
        );
    }
    sleep_past_ttl(now).await;
    assert_eq!(store.get_agent_state("agent-g").await.unwrap(), None);
    assert_eq!(
        store
            .get_agent_states(&AgentStateQuery::new())
            .await
            .unwrap(),
        vec![kept.clone()]
    );
    assert_eq!(
        agent_ids(
            &store
                .get_agent_states(&AgentStateQuery::new().status("running"))
                .await
                .unwrap()
        ),
        ["agent-k"]
    );
    assert_eq!(store.stats().await.unwrap().agent_states, 1);
    let mut back = state("g2", "agent-g", "running", 0);
    back.last_heartbeat = time::now() + TimeDelta::hours(1);
    let report = store.save_agent_state(&back).await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(store.get_agent_state("agent-g").await.unwrap(), Some(back));
}

/// `apply_retention` removes expired data and reports what it removed (exactly, for a sweep);
/// live data is untouched and a second run removes nothing.
pub async fn apply_retention_removes_expired_data_and_reports_counts(fixture: &Fixture) {
    let store = fixture.open(&short_ttls()).await;
    let now = time::now();
    let later = now + TimeDelta::hours(1);
    let mut gone = series("gone", "n");
    gone.updated_at = now;
    gone.values = (0..3)
        .map(|i| MetricValue::new(now - TimeDelta::milliseconds(i), i as f64))
        .collect();
    let mut mixed = series("mixed", "n");
    mixed.updated_at = now;
    mixed.values = vec![MetricValue::new(now, 1.0), MetricValue::new(later, 2.0)];
    store.save_metrics(&[gone, mixed]).await.unwrap();
    let mut a_gone = alert("gone", aimon_core::AlertSeverity::Info, 0);
    a_gone.updated_at = now;
    let mut a_kept = alert("kept", aimon_core::AlertSeverity::Info, 0);
    a_kept.updated_at = later;
    store.save_alerts(&[a_gone, a_kept.clone()]).await.unwrap();
    let mut s_gone = state("g", "agent-g", "x", 0);
    s_gone.last_heartbeat = now;
    let mut s_kept = state("k", "agent-k", "x", 0);
    s_kept.last_heartbeat = later;
    store
        .save_agent_states(&[s_gone, s_kept.clone()])
        .await
        .unwrap();
    sleep_past_ttl(now).await;

    let report = store.apply_retention().await.unwrap();
    let expected = RetentionReport {
        samples_removed: 4,
        series_removed: 1,
        alerts_removed: 1,
        agent_states_removed: 1,
    };
    if store.capabilities().retention == RetentionMechanism::Sweep {
        assert_eq!(report, expected);
    } else {
        // The store expires data by itself: apply_retention reports at most what was left.
        assert!(
            report.samples_removed <= expected.samples_removed,
            "{report:?}"
        );
        assert!(
            report.series_removed <= expected.series_removed,
            "{report:?}"
        );
        assert!(
            report.alerts_removed <= expected.alerts_removed,
            "{report:?}"
        );
        assert!(
            report.agent_states_removed <= expected.agent_states_removed,
            "{report:?}"
        );
    }
    let left = dump(&store).await;
    assert_eq!(metric_ids(&left.metrics), ["mixed"]);
    assert_eq!(left.metrics[0].values, vec![MetricValue::new(later, 2.0)]);
    assert_eq!(left.alerts, vec![a_kept]);
    assert_eq!(left.agent_states, vec![s_kept]);
    let again = store.apply_retention().await.unwrap();
    assert_eq!(again, RetentionReport::default(), "nothing left to remove");
}

/// A series lives while it has a live sample or its `updated_at` is within the metric TTL.
pub async fn series_lives_while_it_has_a_live_sample_or_recent_update(fixture: &Fixture) {
    let store = fixture.open(&short_ttls()).await;
    let started = Instant::now();
    let now = time::now();
    let later = now + TimeDelta::hours(1);
    // Metadata only, updated "later": lives for an hour.
    let mut meta_only = series("meta-only", "n");
    meta_only.updated_at = later;
    // Old samples (expired on arrival) but a fresh update: lives until the TTL passes.
    let mut fresh_meta = series("fresh-meta", "n").with_value(sample(0, 1.0));
    fresh_meta.updated_at = now;
    // Metadata expired but a future sample: lives.
    let sampled = series("sampled", "n").with_value(MetricValue::new(later, 2.0));
    let report = store
        .save_metrics(&[meta_only, fresh_meta, sampled])
        .await
        .unwrap();
    assert_eq!((report.written, report.expired), (1, 1));
    if still_fresh(started) {
        let back = store
            .get_metric("fresh-meta")
            .await
            .unwrap()
            .expect("updated within the TTL");
        assert!(back.values.is_empty(), "its only sample arrived expired");
    }
    sleep_past_ttl(now).await;
    let listed = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(metric_ids(&listed), ["meta-only", "sampled"]);
    assert_eq!(store.get_metric("fresh-meta").await.unwrap(), None);
    assert!(store.get_metric("meta-only").await.unwrap().is_some());
    assert_eq!(store.stats().await.unwrap().series, 2);
    let report = store.apply_retention().await.unwrap();
    if store.capabilities().retention == RetentionMechanism::Sweep {
        assert_eq!(report.series_removed, 1, "{report:?}");
    }
    assert_eq!(
        metric_ids(&store.query_metrics(&MetricQuery::new()).await.unwrap()),
        ["meta-only", "sampled"]
    );
}

/// Without TTL options nothing expires, however old (1970 data is kept), and
/// `apply_retention` removes nothing.
pub async fn data_without_ttl_is_kept_forever(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut m = series("old", "n").with_value(MetricValue::new(epoch, 1.0));
    m.created_at = epoch;
    m.updated_at = epoch;
    let mut a = alert("old", aimon_core::AlertSeverity::Info, 0);
    a.start_time = epoch;
    a.created_at = epoch;
    a.updated_at = epoch;
    let mut s = state("old", "agent-old", "gone", 0);
    s.last_heartbeat = epoch;
    s.created_at = epoch;
    s.updated_at = epoch;
    assert_eq!(store.save_metric(&m).await.unwrap().expired, 0);
    assert_eq!(store.save_alert(&a).await.unwrap().expired, 0);
    assert_eq!(store.save_agent_state(&s).await.unwrap().expired, 0);
    assert_eq!(
        store.apply_retention().await.unwrap(),
        RetentionReport::default()
    );
    assert_eq!(store.get_metric("old").await.unwrap(), Some(m));
    assert_eq!(store.get_alert("old").await.unwrap(), Some(a));
    assert_eq!(store.get_agent_state("agent-old").await.unwrap(), Some(s));
}

/// TTL options are read under the prototype's names; a misspelt one fails to open (naming it)
/// rather than silently keeping data forever, and zero is rejected.
pub async fn ttl_options_are_checked(fixture: &Fixture) {
    let err = fixture
        .try_open(&[("metric_ttl_secs", serde_json::json!(60))])
        .await
        .expect_err("an unknown option must not be ignored");
    assert_eq!(err.kind(), aimon_core::ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("metric_ttl_secs"), "{err}");
    let err = fixture
        .try_open(&[ttl(METRIC_TTL_OPTION, 0)])
        .await
        .expect_err("a zero TTL is a mistake");
    assert_eq!(err.kind(), aimon_core::ErrorKind::ConfigInvalid, "{err}");
    assert!(
        fixture
            .try_open(&[ttl(METRIC_TTL_OPTION, 60)])
            .await
            .is_ok()
    );
}
