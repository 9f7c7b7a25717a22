//! Evaluates resolved filters and orders in Rust, for backends that hold items in memory (the
//! reference backend) and for the client-side parts of others. SQL backends translate
//! [`Filter`]s into `WHERE` clauses with the same meaning.
//!
//! This module builds on [`crate::query`] (it evaluates what a query resolved), never the
//! other way round: the in-memory `matches` of [`AlertQuery`] and [`AgentStateQuery`] are here.

use std::cmp::Ordering;

use crate::model::{AgentState, Alert, Metric};
use crate::query::{
    AgentStateQuery, AlertQuery, Field, Filter, FilterOp, FilterValue, ResolvedOptions, Scalar,
    SortOrder,
};
use crate::time;

/// An item whose fields filters can read.
pub trait Record {
    /// The value of a field of [`crate::query::fields`]; `None` when absent.
    fn field(&self, name: &str) -> Option<Scalar>;
    /// The value of a label (alerts only).
    fn label(&self, _key: &str) -> Option<Scalar> {
        None
    }
}

/// A borrowed record is a record: in-memory selections sort references and clone the page.
impl<R: Record + ?Sized> Record for &R {
    fn field(&self, name: &str) -> Option<Scalar> {
        (**self).field(name)
    }
    fn label(&self, key: &str) -> Option<Scalar> {
        (**self).label(key)
    }
}

fn text(s: &str) -> Option<Scalar> {
    Some(Scalar::Text(s.to_owned()))
}

fn at(ts: chrono::DateTime<chrono::Utc>) -> Option<Scalar> {
    Some(Scalar::Time(time::to_micros(ts)))
}

impl Record for Metric {
    fn field(&self, name: &str) -> Option<Scalar> {
        match name {
            "id" => text(&self.id),
            "name" => text(&self.name),
            "type" => text(self.metric_type.as_str()),
            "description" => self.description.as_deref().and_then(text),
            "unit" => self.unit.as_deref().and_then(text),
            "created_at" => at(self.created_at),
            "updated_at" => at(self.updated_at),
            _ => None,
        }
    }
}

impl Record for Alert {
    fn field(&self, name: &str) -> Option<Scalar> {
        match name {
            "id" => text(&self.id),
            "name" => text(&self.name),
            "description" => self.description.as_deref().and_then(text),
            "severity" => Some(Scalar::Severity(self.severity.rank())),
            "source" => text(&self.source),
            "status" => text(self.status.as_str()),
            "start_time" => at(self.start_time),
            "end_time" => self.end_time.and_then(at),
            "acknowledged_by" => self.acknowledged_by.as_deref().and_then(text),
            "acknowledged_at" => self.acknowledged_at.and_then(at),
            "resolved_by" => self.resolved_by.as_deref().and_then(text),
            "resolved_at" => self.resolved_at.and_then(at),
            "created_at" => at(self.created_at),
            "updated_at" => at(self.updated_at),
            _ => None,
        }
    }

    fn label(&self, key: &str) -> Option<Scalar> {
        self.labels.get(key).and_then(|v| text(v))
    }
}

impl Record for AgentState {
    fn field(&self, name: &str) -> Option<Scalar> {
        match name {
            "id" => text(&self.id),
            "agent_id" => text(&self.agent_id),
            "status" => text(&self.status),
            "last_heartbeat" => at(self.last_heartbeat),
            "created_at" => at(self.created_at),
            "updated_at" => at(self.updated_at),
            _ => None,
        }
    }
}

fn value_of<R: Record>(record: &R, field: &Field) -> Option<Scalar> {
    match field {
        Field::Column(c) => record.field(c.name),
        Field::Label(key) => record.label(key),
    }
}

/// Whether `record` passes one filter. Absent values pass only `ne` and `not_in`.
pub fn matches<R: Record>(record: &R, filter: &Filter) -> bool {
    let actual = value_of(record, &filter.field);
    match (&filter.value, actual) {
        (FilterValue::Many(list), actual) => {
            let found = actual.as_ref().is_some_and(|a| list.contains(a));
            match filter.op {
                FilterOp::NotIn => !found,
                _ => found,
            }
        }
        (FilterValue::One(_), None) => filter.op == FilterOp::Ne,
        (FilterValue::One(expected), Some(actual)) => match filter.op {
            FilterOp::Eq => actual == *expected,
            FilterOp::Ne => actual != *expected,
            FilterOp::Gt => actual > *expected,
            FilterOp::Gte => actual >= *expected,
            FilterOp::Lt => actual < *expected,
            FilterOp::Lte => actual <= *expected,
            FilterOp::Contains => match (&actual, expected) {
                (Scalar::Text(a), Scalar::Text(e)) => a.contains(e.as_str()),
                _ => false,
            },
            FilterOp::In | FilterOp::NotIn => false,
        },
    }
}

/// Whether `record` passes every filter.
pub fn matches_all<R: Record>(record: &R, options: &ResolvedOptions) -> bool {
    options.filters.iter().all(|f| matches(record, f))
}

impl AlertQuery {
    /// Whether `alert` passes the query's status, severities, source, time range, labels and
    /// filters (`options` is [`AlertQuery::resolve`]'s): the whole selection of a backend that
    /// filters alerts in memory.
    pub fn matches(&self, alert: &Alert, options: &ResolvedOptions) -> bool {
        self.status.is_none_or(|s| s == alert.status)
            && self.severity.is_none_or(|s| s == alert.severity)
            && self.min_severity.is_none_or(|s| alert.severity >= s)
            && self.source.as_ref().is_none_or(|s| *s == alert.source)
            && self
                .range_micros()
                .contains(time::to_micros(alert.start_time))
            && self
                .labels
                .iter()
                .all(|(k, v)| alert.labels.get(k) == Some(v))
            && matches_all(alert, options)
    }
}

impl AgentStateQuery {
    /// Whether `state` passes the query's status, heartbeat bound and filters (`options` is
    /// [`AgentStateQuery::resolve`]'s): the whole selection of a backend that filters in memory.
    pub fn matches(&self, state: &AgentState, options: &ResolvedOptions) -> bool {
        self.status.as_ref().is_none_or(|st| *st == state.status)
            && self
                .heartbeat_after_micros()
                .is_none_or(|a| time::to_micros(state.last_heartbeat) >= a)
            && matches_all(state, options)
    }
}

/// Orders records as the options say, ties broken by `tie_breaker`; absent values first when
/// ascending.
pub fn compare<R: Record>(a: &R, b: &R, options: &ResolvedOptions, tie_breaker: &str) -> Ordering {
    let primary = a
        .field(options.sort_by.name)
        .cmp(&b.field(options.sort_by.name));
    let primary = match options.sort_order {
        SortOrder::Asc => primary,
        SortOrder::Desc => primary.reverse(),
    };
    primary.then_with(|| a.field(tie_breaker).cmp(&b.field(tie_breaker)))
}

/// Sorts and pages `items` in place as `options` say.
pub fn sort_and_page<R: Record>(items: &mut Vec<R>, options: &ResolvedOptions, tie_breaker: &str) {
    items.sort_by(|a, b| compare(a, b, options, tie_breaker));
    let start = options.offset.min(items.len());
    items.drain(..start);
    items.truncate(options.limit);
}
