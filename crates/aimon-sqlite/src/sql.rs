//! Building SQL at run time: every value is a bind parameter; only column names from core's
//! fixed field lists, fixed SQL text and `?` placeholders are ever written into the statement.
//!
//! [`aimon_core::query::Filter`]s translate into `WHERE` conditions with exactly the meaning of
//! [`aimon_core::filter::matches`]: an absent value (SQL `NULL`) passes only `ne` and `not_in`;
//! text compares by bytes (SQLite's `BINARY` collation); labels are read with `json_each`, which
//! decodes keys, so any key is safe.
//!
//! Every `EXISTS` subquery in this crate ends in `LIMIT 1`: SQLite 3.51 (the bundled version)
//! rewrites a plain `EXISTS` into a join and then applies `OFFSET` to the joined rows, so a
//! series with several matching samples was skipped more than once. `LIMIT 1` keeps the
//! subquery a subquery (pinned by the parity test's paged, time-ranged queries).

use aimon_core::Tags;
use aimon_core::query::{Field, Scalar};
use aimon_core::sql::{Dialect, push_field};
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{AssertSqlSafe, query::Query};

pub(crate) use aimon_core::sql::{Arg, push_filters, push_order_and_page};

/// SQLite's spelling: `?` placeholders, labels through `json_each`, lists inline or as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lite;

/// A statement under construction and its arguments, in placeholder order.
pub(crate) type Sql = aimon_core::sql::Sql<Lite>;

impl Dialect for Lite {
    const NUMBERED: bool = false;
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    const NOT_EQUAL: &'static str = " IS NOT ";
    const POSITION: &'static str = "instr";
    // SQLite sorts NULL first ascending and last descending.
    const ASC: &'static str = " ASC";
    const DESC: &'static str = " DESC";

    fn scalar(value: &Scalar) -> Arg {
        match value {
            Scalar::Text(s) => Arg::Text(s.clone()),
            Scalar::Time(t) => Arg::Int(*t),
            Scalar::Severity(r) => Arg::Int(*r),
        }
    }

    fn push_label(sql: &mut Sql, labels_column: &str, key: &str) {
        sql.push("(SELECT j.value FROM json_each(")
            .push(labels_column)
            .push(") AS j WHERE j.key = ")
            .bind(key)
            .push(")");
    }

    fn push_in(sql: &mut Sql, field: &Field, labels_column: &str, list: &[Scalar], not_in: bool) {
        if !not_in {
            push_field(sql, field, labels_column);
            sql.push(" IN ");
            push_list(sql, list);
        } else if matches!(field, Field::Column(c) if !c.nullable) {
            push_field(sql, field, labels_column);
            sql.push(" NOT IN ");
            push_list(sql, list);
        } else {
            // NULL NOT IN (…) is NULL: an absent value passes `not_in`.
            sql.push("COALESCE(");
            push_field(sql, field, labels_column);
            sql.push(" NOT IN ");
            push_list(sql, list);
            sql.push(", 1)");
        }
    }
}

/// Runs a [`Sql`] with sqlx.
pub(crate) trait Run {
    /// The statement, ready to run.
    fn query(self) -> Query<'static, Sqlite, SqliteArguments>;
}

impl Run for Sql {
    fn query(self) -> Query<'static, Sqlite, SqliteArguments> {
        // Audited: `text` holds only fixed SQL, quoted names from core's field lists and `?`
        // placeholders; every value is in `args`.
        let mut query = sqlx::query(AssertSqlSafe(self.text));
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
                // Never built by this driver (times are microseconds, lists are inline or
                // JSON), but bound as SQLite stores them all the same.
                Arg::Time(t) => query.bind(aimon_core::time::to_micros(t)),
                Arg::Texts(v) => query.bind(serde_json::Value::from(v).to_string()),
                Arg::Ints(v) => query.bind(serde_json::Value::from(v).to_string()),
                Arg::Times(v) => query.bind(
                    serde_json::Value::from(
                        v.into_iter()
                            .map(aimon_core::time::to_micros)
                            .collect::<Vec<_>>(),
                    )
                    .to_string(),
                ),
            };
        }
        query
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
        sql.bind_scalar(v);
    }
    sql.push(")");
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

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::query::{QueryOptions, tie_breaker};
    use aimon_core::{DataKind, FilterOp, SortOrder};
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
        assert_eq!(aimon_core::sql::int(usize::MAX), i64::MAX);
    }
}
