//! Queries and their options (DESIGN.md rules 2 and 3).
//!
//! # Filter fields
//! [`QueryOptions::filters`] may name these fields; any other is an [`ErrorKind::InvalidInput`]
//! error, never ignored.
//!
//! | kind | fields |
//! |---|---|
//! | metrics | `id`, `name`, `type`, `description`, `unit`, `created_at`, `updated_at` |
//! | alerts | `id`, `name`, `description`, `severity`, `source`, `status`, `start_time`, `end_time`, `acknowledged_by`, `acknowledged_at`, `resolved_by`, `resolved_at`, `created_at`, `updated_at`, `labels.<key>` |
//! | agent states | `id`, `agent_id`, `status`, `last_heartbeat`, `created_at`, `updated_at` |
//!
//! Values are JSON: a string for text fields, an RFC 3339 string for times, a severity name for
//! `severity` (compared by rank, `info < … < critical`), an array for `in` / `not_in`.
//! Text compares by UTF-8 bytes, case-sensitively; `contains` is a substring test on text fields.
//! A field that is absent (a `null` description, a missing label) matches only `ne` and `not_in`.
//!
//! # Order
//! `sort_by` takes any field above except labels; ties are broken by `id` (by `agent_id` for agent
//! states), so pages never overlap. Absent values sort before present ones in ascending order.
//! Without `sort_by`, metrics and alerts come by `id`, agent states by `agent_id`.
//!
//! [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{AlertSeverity, AlertStatus, DataKind, MetricType, Tags};
use crate::{time, validate};

/// Default page size of every query.
pub const DEFAULT_LIMIT: usize = 100;

/// Comparison of a [`QueryFilter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// Equal.
    Eq,
    /// Not equal; also matches items where the field is absent.
    Ne,
    /// Greater than (bytes for text, time for times, rank for severity).
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal to one of the values of a JSON array.
    In,
    /// Equal to none of the values of a JSON array; also matches absent fields.
    NotIn,
    /// The text field contains the value as a substring (case-sensitive); text fields only.
    Contains,
}

impl FilterOp {
    /// Every operator, in declaration order.
    pub const ALL: [FilterOp; 9] = [
        FilterOp::Eq,
        FilterOp::Ne,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::In,
        FilterOp::NotIn,
        FilterOp::Contains,
    ];

    /// The snake-case name used in JSON and the CLI (`"not_in"`); `FromStr` parses it back.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Ne => "ne",
            FilterOp::Gt => "gt",
            FilterOp::Gte => "gte",
            FilterOp::Lt => "lt",
            FilterOp::Lte => "lte",
            FilterOp::In => "in",
            FilterOp::NotIn => "not_in",
            FilterOp::Contains => "contains",
        }
    }
}

impl FromStr for FilterOp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        FilterOp::ALL.into_iter().find(|op| op.as_str() == s).ok_or_else(|| {
            Error::invalid_input(
                "filter operator",
                format!(
                    "unknown operator {s:?}; expected one of eq, ne, gt, gte, lt, lte, in, not_in, contains"
                ),
            )
        })
    }
}

/// One condition on a field of the queried kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryFilter {
    /// A field of the queried kind (see the module docs' table), or `labels.<key>` for alerts.
    pub field: String,
    /// How the field compares with `value`.
    pub operator: FilterOp,
    /// A JSON string (RFC 3339 for times, a severity name for `severity`), or an array of them for
    /// `in` / `not_in`.
    pub value: serde_json::Value,
}

impl QueryFilter {
    /// A filter `field operator value`; checked only when the query runs.
    pub fn new(
        field: impl Into<String>,
        operator: FilterOp,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        QueryFilter {
            field: field.into(),
            operator,
            value: value.into(),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first; absent values first. The default.
    #[default]
    Asc,
    /// Largest first; absent values last.
    Desc,
}

/// Filters, paging and order shared by every query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryOptions {
    /// Conditions an item must all meet.
    pub filters: Vec<QueryFilter>,
    /// Page size; at least 1. Defaults to [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// Items to skip before the page starts. Default 0.
    pub offset: usize,
    /// Field to order by (any filter field but labels); `None` orders by `id` (`agent_id` for agent
    /// states), which also breaks ties.
    pub sort_by: Option<String>,
    /// Direction of `sort_by`. Default ascending.
    pub sort_order: SortOrder,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            filters: Vec::new(),
            limit: DEFAULT_LIMIT,
            offset: 0,
            sort_by: None,
            sort_order: SortOrder::Asc,
        }
    }
}

impl QueryOptions {
    /// Adds a condition `field op value`.
    pub fn filter(
        mut self,
        field: impl Into<String>,
        op: FilterOp,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.filters.push(QueryFilter::new(field, op, value));
        self
    }

    /// Sets the page size; 0 is `InvalidInput` when the query runs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Skips the first `offset` items.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Orders by `field` in `order`.
    pub fn sort(mut self, field: impl Into<String>, order: SortOrder) -> Self {
        self.sort_by = Some(field.into());
        self.sort_order = order;
        self
    }

    /// Checks every field, operator and value against `kind`'s field list and types them.
    pub fn resolve(&self, kind: DataKind) -> Result<ResolvedOptions> {
        if self.limit == 0 {
            return Err(Error::invalid_input("limit", "must be at least 1"));
        }
        let filters = self
            .filters
            .iter()
            .map(|f| resolve_filter(kind, f))
            .collect::<Result<Vec<_>>>()?;
        let sort_by = match &self.sort_by {
            None => tie_breaker(kind),
            Some(name) => match lookup_field("sort_by", kind, name)? {
                Field::Column(col) => col,
                Field::Label(_) => {
                    return Err(Error::invalid_input("sort_by", "cannot sort by a label"));
                }
            },
        };
        Ok(ResolvedOptions {
            filters,
            limit: self.limit,
            offset: self.offset,
            sort_by,
            sort_order: self.sort_order,
        })
    }
}

/// How a field's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// UTF-8 text, compared by bytes.
    Text,
    /// A timestamp, compared in time.
    Time,
    /// An alert severity, compared by rank.
    Severity,
}

/// A known field of a kind: its name (as in the model and the filter list) and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The field's name, as filters spell it.
    pub name: &'static str,
    /// How its values compare.
    pub ty: FieldType,
    /// Whether the field may be absent (`Option` in the model).
    pub nullable: bool,
}

const fn col(name: &'static str, ty: FieldType, nullable: bool) -> Column {
    Column { name, ty, nullable }
}

use FieldType::{Severity as SEV, Text as TXT, Time as TIM};

/// The filterable fields of metrics.
pub const METRIC_FIELDS: &[Column] = &[
    col("id", TXT, false),
    col("name", TXT, false),
    col("type", TXT, false),
    col("description", TXT, true),
    col("unit", TXT, true),
    col("created_at", TIM, false),
    col("updated_at", TIM, false),
];

/// The filterable fields of alerts (plus `labels.<key>`).
pub const ALERT_FIELDS: &[Column] = &[
    col("id", TXT, false),
    col("name", TXT, false),
    col("description", TXT, true),
    col("severity", SEV, false),
    col("source", TXT, false),
    col("status", TXT, false),
    col("start_time", TIM, false),
    col("end_time", TIM, true),
    col("acknowledged_by", TXT, true),
    col("acknowledged_at", TIM, true),
    col("resolved_by", TXT, true),
    col("resolved_at", TIM, true),
    col("created_at", TIM, false),
    col("updated_at", TIM, false),
];

/// The filterable fields of agent states.
pub const AGENT_STATE_FIELDS: &[Column] = &[
    col("id", TXT, false),
    col("agent_id", TXT, false),
    col("status", TXT, false),
    col("last_heartbeat", TIM, false),
    col("created_at", TIM, false),
    col("updated_at", TIM, false),
];

/// The field list of a kind.
pub fn fields(kind: DataKind) -> &'static [Column] {
    match kind {
        DataKind::Metrics => METRIC_FIELDS,
        DataKind::Alerts => ALERT_FIELDS,
        DataKind::AgentStates => AGENT_STATE_FIELDS,
    }
}

/// The field that breaks ties in every order, and the order without `sort_by`.
pub fn tie_breaker(kind: DataKind) -> Column {
    let name = if kind == DataKind::AgentStates {
        "agent_id"
    } else {
        "id"
    };
    *fields(kind)
        .iter()
        .find(|c| c.name == name)
        .expect("id field exists")
}

/// A field named in a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A field of the model.
    Column(Column),
    /// `labels.<key>` of an alert; the key is validated like a tag key.
    Label(String),
}

impl Field {
    /// How the field's values compare; labels are text.
    pub fn ty(&self) -> FieldType {
        match self {
            Field::Column(c) => c.ty,
            Field::Label(_) => FieldType::Text,
        }
    }
}

/// The field `name` of `kind`; `role` (`filter field`, `sort_by`) names what asked in an error.
fn lookup_field(role: &str, kind: DataKind, name: &str) -> Result<Field> {
    if let Some(c) = fields(kind).iter().find(|c| c.name == name) {
        return Ok(Field::Column(*c));
    }
    if let Some(key) = name.strip_prefix("labels.")
        && kind == DataKind::Alerts
    {
        validate::name(format_args!("{role} label key"), key)?;
        return Ok(Field::Label(key.to_owned()));
    }
    let known: Vec<_> = fields(kind).iter().map(|c| c.name).collect();
    let extra = if kind == DataKind::Alerts {
        ", labels.<key>"
    } else {
        ""
    };
    Err(Error::invalid_input(
        role,
        format!(
            "unknown {kind} field {name:?}; known fields: {}{extra}",
            known.join(", ")
        ),
    ))
}

/// A typed filter value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scalar {
    /// A text value.
    Text(String),
    /// Microseconds since the epoch, already rounded as [`time::ceil_micros`] does.
    Time(i64),
    /// [`AlertSeverity::rank`].
    Severity(i64),
}

/// One value or, for `in` / `not_in`, a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    /// One value, for every operator but `in` / `not_in`.
    One(Scalar),
    /// The values of `in` / `not_in` (possibly none).
    Many(Vec<Scalar>),
}

/// A filter whose field exists and whose value has the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The field compared.
    pub field: Field,
    /// The comparison.
    pub op: FilterOp,
    /// The value, typed as the field.
    pub value: FilterValue,
}

/// [`QueryOptions`] checked against a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOptions {
    /// Conditions an item must all meet.
    pub filters: Vec<Filter>,
    /// Page size, at least 1.
    pub limit: usize,
    /// Items to skip.
    pub offset: usize,
    /// Field to order by; the kind's tie breaker when the query named none.
    pub sort_by: Column,
    /// Direction of `sort_by`.
    pub sort_order: SortOrder,
}

fn scalar(field: &str, ty: FieldType, value: &serde_json::Value) -> Result<Scalar> {
    let field_name = format!("filter {field:?} value");
    let text = value.as_str().ok_or_else(|| {
        Error::invalid_input(&field_name, format!("expected a string, got {value}"))
    })?;
    match ty {
        FieldType::Text => {
            validate::text(&field_name, text)?;
            Ok(Scalar::Text(text.to_owned()))
        }
        FieldType::Time => {
            let ts = DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    Error::invalid_input(&field_name, format!("not an RFC 3339 time: {e}"))
                })?
                .with_timezone(&Utc);
            validate::timestamp(&field_name, ts)?;
            Ok(Scalar::Time(time::ceil_micros(ts)))
        }
        FieldType::Severity => Ok(Scalar::Severity(AlertSeverity::from_str(text)?.rank())),
    }
}

fn resolve_filter(kind: DataKind, filter: &QueryFilter) -> Result<Filter> {
    let field = lookup_field("filter field", kind, &filter.field)?;
    let ty = field.ty();
    let value = match filter.operator {
        FilterOp::In | FilterOp::NotIn => {
            let items = filter.value.as_array().ok_or_else(|| {
                Error::invalid_input(
                    format!("filter {:?} value", filter.field),
                    format!(
                        "`{}` needs an array, got {}",
                        filter.operator.as_str(),
                        filter.value
                    ),
                )
            })?;
            FilterValue::Many(
                items
                    .iter()
                    .map(|v| scalar(&filter.field, ty, v))
                    .collect::<Result<_>>()?,
            )
        }
        FilterOp::Contains if ty != FieldType::Text => {
            return Err(Error::invalid_input(
                format!("filter {:?}", filter.field),
                "`contains` applies to text fields only",
            ));
        }
        _ => FilterValue::One(scalar(&filter.field, ty, &filter.value)?),
    };
    Ok(Filter {
        field,
        op: filter.operator,
        value,
    })
}

fn check_range(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Result<()> {
    if let Some(start) = start {
        validate::timestamp("start", start)?;
    }
    if let Some(end) = end {
        validate::timestamp("end", end)?;
    }
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(Error::invalid_input(
            "start",
            format!("{} is after end {}", time::format(start), time::format(end)),
        ));
    }
    Ok(())
}

/// A half-open time range in microseconds, `[start, end)`, with open ends as the full range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicrosRange {
    /// Inclusive start, µs since the epoch; [`time::MIN_TIMESTAMP_MICROS`] when open.
    pub start: i64,
    /// Exclusive end, µs since the epoch; [`time::MAX_TIMESTAMP_MICROS`] when open.
    pub end: i64,
}

impl MicrosRange {
    /// The range of optional bounds, each rounded up to the microsecond.
    pub fn new(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Self {
        MicrosRange {
            start: start.map_or(time::MIN_TIMESTAMP_MICROS, time::ceil_micros),
            end: end.map_or(time::MAX_TIMESTAMP_MICROS, time::ceil_micros),
        }
    }

    /// Whether `start <= micros < end`.
    pub fn contains(&self, micros: i64) -> bool {
        (self.start..self.end).contains(&micros)
    }
}

/// `query_metrics`: series by name, type, time range and sample tags (DESIGN.md rule 2).
///
/// The time range and tags filter *samples*; a series left with no sample is omitted. `limit`,
/// `offset` and order apply to series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricQuery {
    /// Only series with exactly this name.
    pub name: Option<String>,
    /// Only series of this type.
    pub metric_type: Option<MetricType>,
    /// Only samples at or after this time (inclusive).
    pub start: Option<DateTime<Utc>>,
    /// Only samples before this time (exclusive); `start > end` is `InvalidInput`.
    pub end: Option<DateTime<Utc>>,
    /// Only samples carrying every one of these tags with these values.
    pub tags: Tags,
    /// Filters on series fields, paging and order.
    pub options: QueryOptions,
    /// Only the series, each with `values` empty: the same series the query finds otherwise,
    /// without reading their samples (a catalog of what a range holds).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub series_only: bool,
}

impl MetricQuery {
    /// A query for every series (up to [`DEFAULT_LIMIT`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only series named `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only the series, without their samples (see [`MetricQuery::series_only`]).
    pub fn series_only(mut self) -> Self {
        self.series_only = true;
        self
    }

    /// Only series of `metric_type`.
    pub fn metric_type(mut self, metric_type: MetricType) -> Self {
        self.metric_type = Some(metric_type);
        self
    }

    /// Only samples in `[start, end)`.
    pub fn range(mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Only samples tagged `key=value`; repeat for more tags.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Replaces filters, paging and order.
    pub fn options(mut self, options: QueryOptions) -> Self {
        self.options = options;
        self
    }

    /// Validates the query; backends call this first.
    pub fn resolve(&self) -> Result<ResolvedOptions> {
        if let Some(name) = &self.name {
            validate::name("name", name)?;
        }
        validate::tags("tags", &self.tags)?;
        check_range(self.start, self.end)?;
        self.options.resolve(DataKind::Metrics)
    }

    /// The sample time range in microseconds.
    pub fn range_micros(&self) -> MicrosRange {
        MicrosRange::new(self.start, self.end)
    }
}

/// `query_alerts` (DESIGN.md rule 4); the time range applies to `start_time`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertQuery {
    /// Only alerts in this status.
    pub status: Option<AlertStatus>,
    /// Only alerts of exactly this severity.
    pub severity: Option<AlertSeverity>,
    /// Only alerts of this severity or higher (by rank).
    pub min_severity: Option<AlertSeverity>,
    /// Only alerts from this source.
    pub source: Option<String>,
    /// Only alerts whose `start_time` is at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only alerts whose `start_time` is before this time; `start > end` is `InvalidInput`.
    pub end: Option<DateTime<Utc>>,
    /// Only alerts carrying every one of these labels with these values.
    pub labels: Tags,
    /// Filters on alert fields, paging and order.
    pub options: QueryOptions,
}

impl AlertQuery {
    /// A query for every alert (up to [`DEFAULT_LIMIT`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only alerts in `status`.
    pub fn status(mut self, status: AlertStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only alerts of exactly `severity`.
    pub fn severity(mut self, severity: AlertSeverity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Only alerts of `severity` or higher.
    pub fn min_severity(mut self, severity: AlertSeverity) -> Self {
        self.min_severity = Some(severity);
        self
    }

    /// Only alerts from `source`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Only alerts whose `start_time` is in `[start, end)`.
    pub fn range(mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Only alerts labelled `key=value`; repeat for more labels.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces filters, paging and order.
    pub fn options(mut self, options: QueryOptions) -> Self {
        self.options = options;
        self
    }

    /// Validates the query; backends call this first.
    pub fn resolve(&self) -> Result<ResolvedOptions> {
        if let Some(source) = &self.source {
            validate::name("source", source)?;
        }
        validate::tags("labels", &self.labels)?;
        check_range(self.start, self.end)?;
        self.options.resolve(DataKind::Alerts)
    }

    /// The `start_time` range in microseconds.
    pub fn range_micros(&self) -> MicrosRange {
        MicrosRange::new(self.start, self.end)
    }
}

/// `get_agent_states`: the latest state of each agent (DESIGN.md rule 5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentStateQuery {
    /// Only agents whose latest state has exactly this status.
    pub status: Option<String>,
    /// Only agents whose latest heartbeat is at or after this time.
    pub last_heartbeat_after: Option<DateTime<Utc>>,
    /// Filters on agent state fields, paging and order.
    pub options: QueryOptions,
}

impl AgentStateQuery {
    /// A query for every agent's latest state (up to [`DEFAULT_LIMIT`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only agents whose latest status is `status`.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Only agents whose latest heartbeat is at or after `ts`.
    pub fn heartbeat_after(mut self, ts: DateTime<Utc>) -> Self {
        self.last_heartbeat_after = Some(ts);
        self
    }

    /// Replaces filters, paging and order.
    pub fn options(mut self, options: QueryOptions) -> Self {
        self.options = options;
        self
    }

    /// Validates the query; backends call this first.
    pub fn resolve(&self) -> Result<ResolvedOptions> {
        if let Some(status) = &self.status {
            validate::name("status", status)?;
        }
        if let Some(ts) = self.last_heartbeat_after {
            validate::timestamp("last_heartbeat_after", ts)?;
        }
        self.options.resolve(DataKind::AgentStates)
    }

    /// `last_heartbeat_after` in microseconds (inclusive), if set.
    pub fn heartbeat_after_micros(&self) -> Option<i64> {
        self.last_heartbeat_after.map(time::ceil_micros)
    }
}

/// How samples in one bucket combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The mean, by compensated summation; always finite. The default.
    #[default]
    Avg,
    /// The sum, by compensated summation; ±∞ only where the exact sum is beyond the `f64` range.
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The number of samples, also returned as the value.
    Count,
    /// The value of the earliest sample (ties: smallest series id, then tags).
    First,
    /// The value of the latest sample (ties: largest series id, then tags).
    Last,
}

impl Aggregation {
    /// Every aggregation, in declaration order.
    pub const ALL: [Aggregation; 7] = [
        Aggregation::Avg,
        Aggregation::Sum,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Count,
        Aggregation::First,
        Aggregation::Last,
    ];

    /// The lower-case name used in JSON and the CLI (`"avg"`); `FromStr` parses it back.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Sum => "sum",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Count => "count",
            Aggregation::First => "first",
            Aggregation::Last => "last",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Aggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Aggregation::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid_input(
                    "aggregation",
                    format!("unknown aggregation {s:?}; expected avg, sum, min, max, count, first or last"),
                )
            })
    }
}

/// Smallest history step.
pub const MIN_STEP: TimeDelta = TimeDelta::milliseconds(1);
/// Largest history step: 36,500 days (about a century), the same on every backend. InfluxDB
/// counts a duration in `i64` nanoseconds (about 292 years), and a step wider than the whole
/// accepted time range (1970–2262) would only ever make one bucket.
pub const MAX_STEP: TimeDelta = TimeDelta::days(36_500);

/// `metric_history`: downsampled samples of every series named `name` (DESIGN.md rule 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// The series name; every series with it is merged.
    pub name: String,
    /// Only samples at or after this time (inclusive).
    pub start: Option<DateTime<Utc>>,
    /// Only samples before this time (exclusive).
    pub end: Option<DateTime<Utc>>,
    /// Bucket width; buckets start at multiples of it since the Unix epoch.
    pub step: TimeDelta,
    /// How the samples of a bucket combine.
    pub aggregation: Aggregation,
    /// Only samples carrying every one of these tags with these values.
    #[serde(default)]
    pub tags: Tags,
    /// A tag whose values split the result into one series each.
    #[serde(default)]
    pub group_by: Option<String>,
}

impl HistoryQuery {
    /// A history of every sample named `name`, in buckets of `step` (1 ms..=[`MAX_STEP`]).
    pub fn new(name: impl Into<String>, step: TimeDelta, aggregation: Aggregation) -> Self {
        HistoryQuery {
            name: name.into(),
            start: None,
            end: None,
            step,
            aggregation,
            tags: Tags::new(),
            group_by: None,
        }
    }

    /// Only samples in `[start, end)`.
    pub fn range(mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Only samples tagged `key=value`; repeat for more tags.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// One series per value of the tag `tag` (samples without it form the group `None`).
    pub fn group_by(mut self, tag: impl Into<String>) -> Self {
        self.group_by = Some(tag.into());
        self
    }

    /// Checks name, tags, range and step ([`MIN_STEP`]..=[`MAX_STEP`]); `InvalidInput` otherwise.
    /// Backends call this first.
    pub fn validate(&self) -> Result<()> {
        validate::name("name", &self.name)?;
        validate::tags("tags", &self.tags)?;
        if let Some(tag) = &self.group_by {
            validate::name("group_by", tag)?;
        }
        check_range(self.start, self.end)?;
        if self.step < MIN_STEP {
            return Err(Error::invalid_input("step", "must be at least 1 ms"));
        }
        if self.step > MAX_STEP {
            return Err(Error::invalid_input(
                "step",
                format!(
                    "{} s is too large; the longest step is {} days",
                    self.step.num_seconds(),
                    MAX_STEP.num_days()
                ),
            ));
        }
        Ok(())
    }

    /// The step in microseconds (valid after [`HistoryQuery::validate`]).
    pub fn step_micros(&self) -> i64 {
        self.step.num_microseconds().unwrap_or(i64::MAX)
    }

    /// The sample time range in microseconds.
    pub fn range_micros(&self) -> MicrosRange {
        MicrosRange::new(self.start, self.end)
    }
}

/// One bucket of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryBucket {
    /// Where the bucket starts (a multiple of the step since the Unix epoch); it ends one step
    /// later.
    pub start: DateTime<Utc>,
    /// The aggregate of the bucket's samples.
    pub value: f64,
    /// How many samples fell in the bucket (never 0: empty buckets are left out).
    pub count: u64,
}

/// The buckets of one group (all samples when the query has no `group_by`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySeries {
    /// The `group_by` tag's value; `None` without `group_by`, or for samples that lack the tag.
    pub group: Option<String>,
    /// The buckets, oldest first.
    pub buckets: Vec<HistoryBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let scalar = prop_oneof![
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            proptest::sample::select(vec![
                "high",
                "critical",
                "active",
                "2024-05-01T12:00:00Z",
                "2262-01-01T00:00:00Z",
                "1969-12-31T23:59:59Z",
                "",
                "a\u{0}b",
                "not a time",
            ])
            .prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        scalar.prop_recursive(2, 8, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(serde_json::Value::Array)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        /// Any field, operator, value, sort field and paging: resolved options or an
        /// `InvalidInput` error, never a panic, for every kind of data.
        #[test]
        fn any_filter_resolves_or_is_invalid_input(
            field in proptest::sample::select(vec![
                "id", "name", "severity", "status", "start_time", "last_heartbeat", "agent_id",
                "labels.region", "labels.", "labels.a\u{1}", "updated_at", "colour", "",
            ]),
            op in proptest::sample::select(FilterOp::ALL.to_vec()),
            value in json_value(),
            sort in proptest::option::of(proptest::sample::select(vec![
                "id", "severity", "labels.x", "bogus", "created_at",
            ])),
            limit in 0usize..3,
        ) {
            for kind in DataKind::ALL {
                let mut options = QueryOptions::default().filter(field, op, value.clone());
                options.limit = limit;
                if let Some(sort) = sort {
                    options = options.sort(sort, SortOrder::Desc);
                }
                if let Err(e) = options.resolve(kind) {
                    proptest::prop_assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e);
                }
            }
        }
    }

    #[test]
    fn unknown_fields_and_operators_are_errors() {
        let err = QueryOptions::default()
            .filter("colour", FilterOp::Eq, "red")
            .resolve(DataKind::Alerts)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("labels.<key>"), "{err}");
        assert!("like".parse::<FilterOp>().is_err());
    }

    #[test]
    fn values_are_typed_by_field() {
        let opts = QueryOptions::default()
            .filter("severity", FilterOp::Gte, "HIGH")
            .filter("start_time", FilterOp::Lt, "2024-01-01T00:00:00.0000001Z")
            .filter(
                "status",
                FilterOp::In,
                serde_json::json!(["active", "acknowledged"]),
            )
            .resolve(DataKind::Alerts)
            .unwrap();
        assert_eq!(opts.filters[0].value, FilterValue::One(Scalar::Severity(3)));
        assert_eq!(
            opts.filters[1].value,
            FilterValue::One(Scalar::Time(1_704_067_200_000_001))
        );
        assert!(matches!(&opts.filters[2].value, FilterValue::Many(v) if v.len() == 2));
    }

    #[test]
    fn contains_on_a_time_field_is_rejected() {
        let err = QueryOptions::default()
            .filter("created_at", FilterOp::Contains, "2024")
            .resolve(DataKind::Metrics)
            .unwrap_err();
        assert!(err.to_string().contains("text fields only"), "{err}");
    }

    #[test]
    fn zero_limit_and_reversed_ranges_are_rejected() {
        assert!(
            QueryOptions::default()
                .limit(0)
                .resolve(DataKind::Metrics)
                .is_err()
        );
        let now = time::now();
        let q = MetricQuery::new().range(now, now - TimeDelta::seconds(1));
        assert!(q.resolve().is_err());
    }

    #[test]
    fn sub_microsecond_bounds_round_up() {
        let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00.0000005Z")
            .unwrap()
            .to_utc();
        let r = MicrosRange::new(Some(start), None);
        assert_eq!(r.start, 1_704_067_200_000_001);
    }
}
