//! The mapping from aimon queries to Qdrant filters, written once for both modes.
//!
//! Builders here turn an [`AlertQuery`], an [`AgentStateQuery`], a [`MetricQuery`] or a history
//! query (plus the retention cutoff) into a [`FilterIr`]: a conjunction of keyword matches and
//! integer ranges over the payload fields of [`crate::payload`]. Two small converters turn the
//! IR into the engine's own type: `edge::to_filter` (qdrant-edge's `Filter`) and
//! `server::to_filter` (qdrant-client's `qdrant::Filter`).
//!
//! The IR selects a superset of the answer, never less: the operators of `options.filters`
//! (`contains`, `ne`, nulls…) are not pushed down, and integer ranges travel as `f64` bounds
//! rounded outwards. The backend checks every candidate with the core's exact predicates
//! (`AlertQuery::matches`, `RetentionPolicy::is_live`…) before answering, so results are the
//! reference ones.

use aimon_core::query::MicrosRange;
use aimon_core::time;
use aimon_core::{AgentStateQuery, AlertQuery, MetricQuery, Tags};

use crate::ids::label_kv;
use crate::payload::field;

/// One condition on a payload field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The keyword field (or one element of a keyword array) equals one of `any_of`.
    Keyword {
        /// The payload field ([`crate::payload::field`]).
        field: &'static str,
        /// Accepted values; one of them must match.
        any_of: Vec<String>,
    },
    /// The integer field is within `[gte, lt)`; an absent bound is open.
    IntRange {
        /// The payload field ([`crate::payload::field`]).
        field: &'static str,
        /// Inclusive lower bound.
        gte: Option<i64>,
        /// Exclusive upper bound.
        lt: Option<i64>,
    },
}

/// A conjunction of conditions (`must` in Qdrant's terms); empty selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterIr {
    /// Conditions that must all hold.
    pub must: Vec<Condition>,
}

impl FilterIr {
    /// An empty filter: selects every point.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the filter has no condition (selects every point).
    pub fn is_empty(&self) -> bool {
        self.must.is_empty()
    }

    /// `field == value`.
    pub fn keyword(mut self, field: &'static str, value: impl Into<String>) -> Self {
        self.must.push(Condition::Keyword {
            field,
            any_of: vec![value.into()],
        });
        self
    }

    /// `field` equals one of `values` (nothing when `values` is empty would select nothing,
    /// so callers never pass an empty list).
    pub fn keyword_any(mut self, field: &'static str, values: Vec<String>) -> Self {
        self.must.push(Condition::Keyword {
            field,
            any_of: values,
        });
        self
    }

    /// `gte <= field < lt`; nothing is added when both bounds are open.
    pub fn range(mut self, field: &'static str, gte: Option<i64>, lt: Option<i64>) -> Self {
        if gte.is_some() || lt.is_some() {
            self.must.push(Condition::IntRange { field, gte, lt });
        }
        self
    }

    /// One exact `key=value` match per wanted label or tag, on a `*_kv` keyword array.
    pub fn labels(mut self, field: &'static str, wanted: &Tags) -> Self {
        for (k, v) in wanted {
            self = self.keyword(field, label_kv(k, v));
        }
        self
    }

    /// A time range `[start, end)` in µs intersected with a retention cutoff (live data is at
    /// or after the cutoff).
    pub fn time(
        self,
        field: &'static str,
        range: Option<MicrosRange>,
        cutoff: Option<i64>,
    ) -> Self {
        let full = MicrosRange::new(None, None);
        let range = range.unwrap_or(full);
        let mut gte = (range.start != full.start).then_some(range.start);
        if let Some(c) = cutoff {
            gte = Some(gte.map_or(c, |g| g.max(c)));
        }
        let lt = (range.end != full.end).then_some(range.end);
        self.range(field, gte, lt)
    }
}

/// `f64` bounds for an integer range, rounded outwards so the filter never drops a match
/// (timestamps in µs pass 2^53 after the year 2255).
pub fn float_bounds(gte: Option<i64>, lt: Option<i64>) -> (Option<f64>, Option<f64>) {
    let lower = gte.map(|g| {
        let f = g as f64;
        if (f as i128) > i128::from(g) {
            f.next_down()
        } else {
            f
        }
    });
    // `lt` becomes an inclusive upper bound `lte` (a superset of `< lt`).
    let upper = lt.map(|l| {
        let f = l as f64;
        if (f as i128) < i128::from(l) {
            f.next_up()
        } else {
            f
        }
    });
    (lower, upper)
}

/// Alerts a query (and the alert cutoff) selects, as far as the payload can tell.
pub fn alerts(query: &AlertQuery, cutoff: Option<i64>) -> FilterIr {
    let mut f = FilterIr::new();
    if let Some(status) = query.status {
        f = f.keyword(field::STATUS, status.as_str());
    }
    if let Some(severity) = query.severity {
        f = f.keyword(field::SEVERITY, severity.as_str());
    }
    if let Some(min) = query.min_severity {
        f = f.range(field::SEVERITY_RANK, Some(min.rank()), None);
    }
    if let Some(source) = &query.source {
        f = f.keyword(field::SOURCE, source.clone());
    }
    let range = (query.start.is_some() || query.end.is_some()).then(|| query.range_micros());
    f = f.time(field::START_US, range, None);
    f = f.range(field::UPDATED_US, cutoff, None);
    f.labels(field::LABEL_KV, &query.labels)
}

/// Latest agent states a query (and the agent-state cutoff) selects.
pub fn agent_states(query: &AgentStateQuery, cutoff: Option<i64>) -> FilterIr {
    let mut f = FilterIr::new();
    if let Some(status) = &query.status {
        f = f.keyword(field::STATUS, status.clone());
    }
    let after = match (query.heartbeat_after_micros(), cutoff) {
        (Some(a), Some(c)) => Some(a.max(c)),
        (a, c) => a.or(c),
    };
    f.range(field::HEARTBEAT_US, after, None)
}

/// Series documents by name and type.
pub fn series(query: &MetricQuery) -> FilterIr {
    let mut f = FilterIr::new();
    if let Some(name) = &query.name {
        f = f.keyword(field::NAME, name.clone());
    }
    if let Some(t) = query.metric_type {
        f = f.keyword(field::METRIC_TYPE, t.as_str());
    }
    f
}

/// Samples of some series (all with `None`), in a time range, with the wanted tags, live under
/// `cutoff`.
pub fn samples(
    series_ids: Option<Vec<String>>,
    range: Option<MicrosRange>,
    tags: &Tags,
    cutoff: Option<i64>,
) -> FilterIr {
    let mut f = FilterIr::new();
    if let Some(ids) = series_ids {
        f = f.keyword_any(field::SERIES_ID, ids);
    }
    f.time(field::TS_US, range, cutoff)
        .labels(field::TAG_KV, tags)
}

/// Everything with `field` before `cutoff` (a superset; callers recheck): retention sweeps.
pub fn before(field: &'static str, cutoff: i64) -> FilterIr {
    FilterIr::new().range(field, None, Some(cutoff.saturating_add(1)))
}

/// The current time in µs, for cutoffs.
pub fn now_micros() -> i64 {
    time::to_micros(time::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{AlertSeverity, AlertStatus};

    #[test]
    fn alert_query_maps_every_pushable_field() {
        let q = AlertQuery::new()
            .status(AlertStatus::Active)
            .min_severity(AlertSeverity::High)
            .source("agent-1")
            .label("a.b[0]\"c\"", "v");
        let f = alerts(&q, Some(5));
        assert_eq!(
            f.must,
            vec![
                Condition::Keyword {
                    field: field::STATUS,
                    any_of: vec!["active".into()]
                },
                Condition::IntRange {
                    field: field::SEVERITY_RANK,
                    gte: Some(3),
                    lt: None
                },
                Condition::Keyword {
                    field: field::SOURCE,
                    any_of: vec!["agent-1".into()]
                },
                Condition::IntRange {
                    field: field::UPDATED_US,
                    gte: Some(5),
                    lt: None
                },
                Condition::Keyword {
                    field: field::LABEL_KV,
                    any_of: vec!["a.b[0]\"c\"=v".into()]
                },
            ]
        );
    }

    #[test]
    fn empty_queries_filter_nothing() {
        assert!(alerts(&AlertQuery::new(), None).is_empty());
        assert!(agent_states(&AgentStateQuery::new(), None).is_empty());
        assert!(series(&MetricQuery::new()).is_empty());
        assert!(samples(None, None, &Tags::new(), None).is_empty());
    }

    #[test]
    fn time_ranges_meet_the_cutoff() {
        let f = FilterIr::new().time(
            field::TS_US,
            Some(MicrosRange { start: 10, end: 20 }),
            Some(15),
        );
        assert_eq!(
            f.must,
            vec![Condition::IntRange {
                field: field::TS_US,
                gte: Some(15),
                lt: Some(20)
            }]
        );
        let f = agent_states(&AgentStateQuery::new(), Some(7));
        assert_eq!(
            f.must,
            vec![Condition::IntRange {
                field: field::HEARTBEAT_US,
                gte: Some(7),
                lt: None
            }]
        );
    }

    #[test]
    fn float_bounds_round_outwards() {
        let big = (1i64 << 53) + 1;
        let (lo, hi) = float_bounds(Some(big), Some(big));
        assert!(lo.unwrap() <= big as f64 && (lo.unwrap() as i128) <= i128::from(big));
        assert!((hi.unwrap() as i128) >= i128::from(big));
        assert_eq!(float_bounds(Some(5), Some(9)), (Some(5.0), Some(9.0)));
        assert_eq!(float_bounds(None, None), (None, None));
    }
}
