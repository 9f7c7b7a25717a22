//! Building SQL at run time: every value is a bind parameter (`$n`); only column names from
//! core's fixed field lists, fixed SQL text and placeholders are ever written into a statement.
//!
//! [`aimon_core::query::Filter`]s translate into `WHERE` conditions with exactly the meaning of
//! [`aimon_core::filter::matches`]: an absent value (SQL `NULL`) passes only `ne` (`IS DISTINCT
//! FROM`) and `not_in`; text compares by bytes (every text column is `COLLATE "C"`, and label
//! values read from JSON are given that collation); lists bind as one array (`= ANY($n)`), so
//! no list runs into the protocol's parameter limit.

use aimon_core::query::{Field, FieldType, Scalar};
use aimon_core::sql::Dialect;
use aimon_core::time;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::{AssertSqlSafe, query::Query};

pub(crate) use aimon_core::sql::{Arg, push_filters, push_order_and_page};

/// PostgreSQL's spelling: `$n` placeholders, `jsonb` labels in byte order, lists as one array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pg;

/// A statement under construction and its arguments, in placeholder order.
pub(crate) type Sql = aimon_core::sql::Sql<Pg>;

impl Dialect for Pg {
    const NUMBERED: bool = true;
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const NOT_EQUAL: &'static str = " IS DISTINCT FROM ";
    const POSITION: &'static str = "strpos";
    const ASC: &'static str = " ASC NULLS FIRST";
    const DESC: &'static str = " DESC NULLS LAST";

    fn scalar(value: &Scalar) -> Arg {
        match value {
            Scalar::Text(s) => Arg::Text(s.clone()),
            Scalar::Time(t) => Arg::Time(time::from_micros(*t)),
            Scalar::Severity(r) => Arg::Int(*r),
        }
    }

    fn push_label(sql: &mut Sql, labels_column: &str, key: &str) {
        sql.push("((")
            .push(labels_column)
            .push(" ->> ")
            .bind(key)
            .push(") COLLATE \"C\")");
    }

    fn push_in(sql: &mut Sql, field: &Field, labels_column: &str, list: &[Scalar], not_in: bool) {
        let list = list_arg(field.ty(), list);
        if not_in {
            // NOT (NULL = ANY(…)) is NULL: an absent value passes `not_in`.
            sql.push("COALESCE(NOT (");
            aimon_core::sql::push_field(sql, field, labels_column);
            sql.push(" = ANY(").bind(list).push(")), TRUE)");
        } else {
            aimon_core::sql::push_field(sql, field, labels_column);
            sql.push(" = ANY(").bind(list).push(")");
        }
    }
}

/// Runs a [`Sql`] with sqlx.
pub(crate) trait Run {
    /// The statement, ready to run.
    fn query(self) -> Query<'static, Postgres, PgArguments>;
}

impl Run for Sql {
    fn query(self) -> Query<'static, Postgres, PgArguments> {
        // Audited: `text` holds only fixed SQL, quoted names from core's field lists and `$n`
        // placeholders; every value is in `args`.
        let mut query = sqlx::query(AssertSqlSafe(self.text));
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
                Arg::Time(t) => query.bind(t),
                Arg::Texts(v) => query.bind(v),
                Arg::Ints(v) => query.bind(v),
                Arg::Times(v) => query.bind(v),
            };
        }
        query
    }
}

/// A list of one field type as one array argument.
fn list_arg(ty: FieldType, list: &[Scalar]) -> Arg {
    match ty {
        FieldType::Text => Arg::Texts(
            list.iter()
                .map(|v| match v {
                    Scalar::Text(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
        ),
        FieldType::Time => Arg::Times(
            list.iter()
                .map(|v| match v {
                    Scalar::Time(t) => time::from_micros(*t),
                    _ => time::from_micros(0),
                })
                .collect(),
        ),
        FieldType::Severity => Arg::Ints(
            list.iter()
                .map(|v| match v {
                    Scalar::Severity(r) => *r,
                    _ => -1,
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::query::{QueryOptions, tie_breaker};
    use aimon_core::{DataKind, FilterOp, SortOrder};
    use serde_json::json;

    fn build(kind: DataKind, options: QueryOptions) -> Sql {
        let resolved = options.resolve(kind).unwrap();
        let mut sql = Sql::new("SELECT * FROM t WHERE TRUE");
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
        assert_eq!(sql.text.matches('$').count(), sql.args.len());
        assert_eq!(
            sql.args[..5],
            [
                Arg::Text(hostile.into()),
                Arg::Text(hostile.into()),
                Arg::Text(hostile.into()),
                Arg::Texts(vec![hostile.into(), "b".into()]),
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
                .filter("created_at", FilterOp::Gte, "2024-01-01T00:00:00Z")
                .sort("unit", SortOrder::Desc)
                .limit(5)
                .offset(10),
        );
        assert_eq!(
            sql.text,
            "SELECT * FROM t WHERE TRUE AND \"description\" IS DISTINCT FROM $1 \
             AND COALESCE(NOT (\"unit\" = ANY($2)), TRUE) AND FALSE AND TRUE \
             AND \"created_at\" >= $3 \
             ORDER BY \"unit\" DESC NULLS LAST, \"id\" ASC LIMIT $4 OFFSET $5"
        );
        assert_eq!(
            sql.args[2],
            Arg::Time(time::from_micros(1_704_067_200_000_000))
        );
        assert_eq!(sql.args[3..], [Arg::Int(5), Arg::Int(10)]);
    }

    #[test]
    fn labels_read_jsonb_in_byte_order() {
        let sql = build(
            DataKind::Alerts,
            QueryOptions::default().filter("labels.team", FilterOp::Gt, "a"),
        );
        assert!(
            sql.text.contains("((labels ->> $1) COLLATE \"C\") > $2"),
            "{}",
            sql.text
        );
    }

    #[test]
    fn append_renumbers_placeholders() {
        let mut a = Sql::new("SELECT ");
        a.bind(1).push(", ");
        let mut b = Sql::new("");
        b.bind(2).push(" + ").bind(3).push("::int");
        a.append(b);
        assert_eq!(a.text, "SELECT $1, $2 + $3::int");
        assert_eq!(a.args, [Arg::Int(1), Arg::Int(2), Arg::Int(3)]);
    }
}
