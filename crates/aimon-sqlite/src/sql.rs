//! Building SQL at run time: every value is a bind parameter; only column names from core's
//! fixed field lists, fixed SQL text and `?` placeholders are ever written into the statement.
//!
//! [`Filter`]s translate into `WHERE` conditions with exactly the meaning of
//! [`aimon_core::filter::matches`]: an absent value (SQL `NULL`) passes only `ne` and `not_in`;
//! text compares by bytes (SQLite's `BINARY` collation); labels are read with `json_each`, which
//! decodes keys, so any key is safe.
//!
//! Every `EXISTS` subquery in this crate ends in `LIMIT 1`: SQLite 3.51 (the bundled version)
//! rewrites a plain `EXISTS` into a join and then applies `OFFSET` to the joined rows, so a
//! series with several matching samples was skipped more than once. `LIMIT 1` keeps the
//! subquery a subquery (pinned by the parity test's paged, time-ranged queries).

use aimon_core::query::{Column, Field, Filter, FilterOp, FilterValue, ResolvedOptions, Scalar};
use aimon_core::{SortOrder, Tags};
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{AssertSqlSafe, query::Query};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

impl From<&Scalar> for Arg {
    fn from(value: &Scalar) -> Self {
        match value {
            Scalar::Text(s) => Arg::Text(s.clone()),
            Scalar::Time(t) => Arg::Int(*t),
            Scalar::Severity(r) => Arg::Int(*r),
        }
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(value.to_owned())
    }
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Arg::Text(value)
    }
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

/// A statement under construction and its arguments, in placeholder order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends fixed SQL text (never data).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a `?` placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.text.push('?');
        self.args.push(value.into());
        self
    }

    /// Appends a column name from core's fixed field lists, quoted.
    pub fn column(&mut self, column: &Column) -> &mut Self {
        self.push_ident(column.name)
    }

    fn push_ident(&mut self, name: &'static str) -> &mut Self {
        self.text.push('"');
        self.text.push_str(name);
        self.text.push('"');
        self
    }

    /// The statement, ready to run.
    pub fn query(self) -> Query<'static, Sqlite, SqliteArguments> {
        // Audited: `text` holds only fixed SQL, quoted names from core's field lists and `?`
        // placeholders; every value is in `args`.
        let mut query = sqlx::query(AssertSqlSafe(self.text));
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
            };
        }
        query
    }
}

/// `usize` as a SQLite integer, saturating.
pub(crate) fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn push_field(sql: &mut Sql, field: &Field, labels_column: &str) {
    match field {
        Field::Column(c) => {
            sql.column(c);
        }
        Field::Label(key) => {
            sql.push("(SELECT j.value FROM json_each(")
                .push(labels_column)
                .push(") AS j WHERE j.key = ")
                .bind(key.as_str())
                .push(")");
        }
    }
}

/// Lists longer than this are bound as one JSON array (read with `json_each`), so that no list
/// runs into SQLite's limit on bound parameters.
pub(crate) const MAX_INLINE_LIST: usize = 256;

fn push_list(sql: &mut Sql, list: &[Scalar]) {
    if list.len() > MAX_INLINE_LIST {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|v| match v {
                Scalar::Text(s) => serde_json::Value::from(s.as_str()),
                Scalar::Time(t) | Scalar::Severity(t) => serde_json::Value::from(*t),
            })
            .collect();
        sql.push("(SELECT l.value FROM json_each(")
            .bind(serde_json::Value::Array(items).to_string())
            .push(") AS l)");
        return;
    }
    sql.push("(");
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(v);
    }
    sql.push(")");
}

/// Appends one filter as a condition. `labels_column` names the JSON column `labels.<key>`
/// fields read (a fixed name, alerts only).
pub(crate) fn push_filter(sql: &mut Sql, filter: &Filter, labels_column: &str) {
    match (&filter.value, filter.op) {
        (FilterValue::Many(list), FilterOp::NotIn) => {
            if list.is_empty() {
                sql.push("1");
            } else if matches!(filter.field, Field::Column(c) if !c.nullable) {
                push_field(sql, &filter.field, labels_column);
                sql.push(" NOT IN ");
                push_list(sql, list);
            } else {
                // NULL NOT IN (…) is NULL: an absent value passes `not_in`.
                sql.push("COALESCE(");
                push_field(sql, &filter.field, labels_column);
                sql.push(" NOT IN ");
                push_list(sql, list);
                sql.push(", 1)");
            }
        }
        (FilterValue::Many(list), _) => {
            if list.is_empty() {
                sql.push("0");
            } else {
                push_field(sql, &filter.field, labels_column);
                sql.push(" IN ");
                push_list(sql, list);
            }
        }
        (FilterValue::One(_), FilterOp::In | FilterOp::NotIn) => {
            sql.push("0");
        }
        (FilterValue::One(value), op) => {
            // Conditions are only ever joined with AND at the top of a WHERE clause, where NULL
            // (an absent value) fails like false, as `matches` wants for every operator but
            // `ne`, which `IS NOT` makes true for NULL.
            if op == FilterOp::Contains {
                sql.push("instr(");
                push_field(sql, &filter.field, labels_column);
                sql.push(", ").bind(value).push(") > 0");
                return;
            }
            let operator = match op {
                FilterOp::Ne => " IS NOT ",
                FilterOp::Gt => " > ",
                FilterOp::Gte => " >= ",
                FilterOp::Lt => " < ",
                FilterOp::Lte => " <= ",
                _ => " = ",
            };
            push_field(sql, &filter.field, labels_column);
            sql.push(operator).bind(value);
        }
    }
}

/// Appends ` AND <filter>` for every filter.
pub(crate) fn push_filters(sql: &mut Sql, options: &ResolvedOptions, labels_column: &str) {
    for filter in &options.filters {
        sql.push(" AND ");
        push_filter(sql, filter, labels_column);
    }
}

/// Appends ` AND` a condition per wanted pair: the JSON object in `column` holds every pair.
pub(crate) fn push_tag_match(sql: &mut Sql, column: &str, wanted: &Tags) {
    for (key, value) in wanted {
        sql.push(" AND EXISTS (SELECT 1 FROM json_each(")
            .push(column)
            .push(") AS j WHERE j.key = ")
            .bind(key.as_str())
            .push(" AND j.value = ")
            .bind(value.as_str())
            .push(" LIMIT 1)");
    }
}

/// Appends `(SELECT … )`, the subquery of the tag sets (from the `tagset_pairs` index) that hold
/// every wanted pair: one primary-key range a pair, intersected. `wanted` must not be empty.
pub(crate) fn push_matching_tagsets(sql: &mut Sql, wanted: &Tags) {
    debug_assert!(!wanted.is_empty());
    sql.push("(");
    for (i, (key, value)) in wanted.iter().enumerate() {
        if i > 0 {
            sql.push(" INTERSECT ");
        }
        sql.push("SELECT p.tags FROM tagset_pairs p WHERE p.\"key\" = ")
            .bind(key.as_str())
            .push(" AND p.\"value\" = ")
            .bind(value.as_str());
    }
    sql.push(")");
}

/// Appends ` AND <series> IN (…)`: the series (an id column) has a tag set holding every
/// wanted pair in the `series_tagsets` index. A superset of the series with a matching sample,
/// so SQLite visits only those. Nothing when `wanted` is empty.
pub(crate) fn push_series_tag_match(sql: &mut Sql, series: &str, wanted: &Tags) {
    if wanted.is_empty() {
        return;
    }
    sql.push(" AND ")
        .push(series)
        .push(" IN (SELECT st.series_id FROM series_tagsets st WHERE st.tags IN ");
    push_matching_tagsets(sql, wanted);
    sql.push(")");
}

/// Appends ` AND <tags> IN (…)`: the tag set (a canonical tags JSON column) holds every wanted
/// pair. Exact, through the `tagset_pairs` index. Nothing when `wanted` is empty.
pub(crate) fn push_tags_match(sql: &mut Sql, tags: &str, wanted: &Tags) {
    if wanted.is_empty() {
        return;
    }
    sql.push(" AND ").push(tags).push(" IN ");
    push_matching_tagsets(sql, wanted);
}

/// Appends the order (absent values first ascending, last descending, as SQLite sorts `NULL`),
/// the tie-breaker and the page.
pub(crate) fn push_order_and_page(sql: &mut Sql, options: &ResolvedOptions, tie_breaker: Column) {
    sql.push(" ORDER BY ").column(&options.sort_by);
    sql.push(match options.sort_order {
        SortOrder::Asc => " ASC",
        SortOrder::Desc => " DESC",
    });
    if options.sort_by.name != tie_breaker.name {
        sql.push(", ").column(&tie_breaker).push(" ASC");
    }
    sql.push(" LIMIT ")
        .bind(int(options.limit))
        .push(" OFFSET ")
        .bind(int(options.offset));
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::query::{QueryOptions, tie_breaker};
    use aimon_core::{DataKind, FilterOp};
    use serde_json::json;

    fn build(kind: DataKind, options: QueryOptions) -> Sql {
        let resolved = options.resolve(kind).unwrap();
        let mut sql = Sql::new("SELECT * FROM t WHERE 1");
        push_filters(&mut sql, &resolved, "labels");
        push_order_and_page(&mut sql, &resolved, tie_breaker(kind));
        sql
    }

    #[test]
    fn values_are_bound_never_formatted() {
        let hostile = "x' OR 1=1; --\"";
        let sql = build(
            DataKind::Alerts,
            QueryOptions::default()
                .filter("name", FilterOp::Eq, hostile)
                .filter(format!("labels.{hostile}"), FilterOp::Ne, hostile)
                .filter("source", FilterOp::In, json!([hostile, "b"]))
                .filter("description", FilterOp::Contains, hostile),
        );
        assert!(!sql.text.contains("OR 1=1"), "{}", sql.text);
        assert_eq!(sql.text.matches('?').count(), sql.args.len());
        assert_eq!(
            sql.args[..6],
            [
                Arg::Text(hostile.into()),
                Arg::Text(hostile.into()),
                Arg::Text(hostile.into()),
                Arg::Text(hostile.into()),
                Arg::Text("b".into()),
                Arg::Text(hostile.into()),
            ]
        );
    }

    #[test]
    fn operators_translate_with_null_semantics() {
        let sql = build(
            DataKind::Metrics,
            QueryOptions::default()
                .filter("description", FilterOp::Ne, "a")
                .filter("unit", FilterOp::NotIn, json!(["s"]))
                .filter("unit", FilterOp::In, json!([]))
                .filter("unit", FilterOp::NotIn, json!([]))
                .filter("id", FilterOp::NotIn, json!(["x"]))
                .filter("created_at", FilterOp::Gte, "2024-01-01T00:00:00Z")
                .sort("unit", SortOrder::Desc)
                .limit(5)
                .offset(10),
        );
        assert_eq!(
            sql.text,
            "SELECT * FROM t WHERE 1 AND \"description\" IS NOT ? \
             AND COALESCE(\"unit\" NOT IN (?), 1) AND 0 AND 1 AND \"id\" NOT IN (?) \
             AND \"created_at\" >= ? \
             ORDER BY \"unit\" DESC, \"id\" ASC LIMIT ? OFFSET ?"
        );
        assert_eq!(sql.args[3], Arg::Int(1_704_067_200_000_000));
        assert_eq!(sql.args[4..], [Arg::Int(5), Arg::Int(10)]);
    }

    #[test]
    fn severity_binds_its_rank_and_default_order_is_the_tie_breaker() {
        let sql = build(
            DataKind::Alerts,
            QueryOptions::default().filter("severity", FilterOp::Gt, "medium"),
        );
        assert!(sql.text.ends_with("ORDER BY \"id\" ASC LIMIT ? OFFSET ?"));
        assert_eq!(sql.args[0], Arg::Int(2));
        let sql = build(DataKind::AgentStates, QueryOptions::default());
        assert!(
            sql.text
                .ends_with("ORDER BY \"agent_id\" ASC LIMIT ? OFFSET ?")
        );
    }

    #[test]
    fn tag_matches_use_json_each() {
        let mut sql = Sql::new("");
        let tags = Tags::from([("k\"[0].x".to_owned(), "v'".to_owned())]);
        push_tag_match(&mut sql, "x.tags", &tags);
        assert_eq!(
            sql.text,
            " AND EXISTS (SELECT 1 FROM json_each(x.tags) AS j WHERE j.key = ? AND j.value = ? LIMIT 1)"
        );
        assert_eq!(sql.args.len(), 2);
    }

    #[test]
    fn sample_tag_matches_use_the_tagset_index() {
        let mut sql = Sql::new("");
        let tags = Tags::from([
            ("a".to_owned(), "1".to_owned()),
            ("k\"".to_owned(), "v'".to_owned()),
        ]);
        push_series_tag_match(&mut sql, "s.id", &tags);
        push_tags_match(&mut sql, "x.tags", &tags);
        let matching = "(SELECT p.tags FROM tagset_pairs p WHERE p.\"key\" = ? AND p.\"value\" = ? \
             INTERSECT SELECT p.tags FROM tagset_pairs p WHERE p.\"key\" = ? AND p.\"value\" = ?)";
        assert_eq!(
            sql.text,
            format!(
                " AND s.id IN (SELECT st.series_id FROM series_tagsets st WHERE st.tags IN \
                 {matching}) AND x.tags IN {matching}"
            )
        );
        assert_eq!(sql.args.len(), 8);
        assert_eq!(sql.args[3], Arg::Text("v'".into()));
        let mut none = Sql::new("");
        push_series_tag_match(&mut none, "s.id", &Tags::new());
        push_tags_match(&mut none, "x.tags", &Tags::new());
        assert_eq!((none.text.as_str(), none.args.len()), ("", 0));
    }

    #[test]
    fn long_lists_bind_one_json_array() {
        let ids: Vec<String> = (0..=MAX_INLINE_LIST).map(|i| i.to_string()).collect();
        let sql = build(
            DataKind::Metrics,
            QueryOptions::default().filter("id", FilterOp::In, json!(ids)),
        );
        assert!(
            sql.text
                .contains("\"id\" IN (SELECT l.value FROM json_each(?) AS l)"),
            "{}",
            sql.text
        );
        assert_eq!(sql.args.len(), 3);
    }

    #[test]
    fn huge_pages_saturate() {
        assert_eq!(int(usize::MAX), i64::MAX);
    }
}
