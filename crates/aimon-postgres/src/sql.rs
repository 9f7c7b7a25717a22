//! Building SQL at run time: every value is a bind parameter (`$n`); only column names from
//! core's fixed field lists, fixed SQL text and placeholders are ever written into a statement.
//!
//! [`Filter`]s translate into `WHERE` conditions with exactly the meaning of
//! [`aimon_core::filter::matches`]: an absent value (SQL `NULL`) passes only `ne` (`IS DISTINCT
//! FROM`) and `not_in`; text compares by bytes (every text column is `COLLATE "C"`, and label
//! values read from JSON are given that collation); lists bind as one array (`= ANY($n)`), so
//! no list runs into the protocol's parameter limit.

use aimon_core::query::{
    Column, Field, FieldType, Filter, FilterOp, FilterValue, ResolvedOptions, Scalar,
};
use aimon_core::{SortOrder, time};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::{AssertSqlSafe, query::Query};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
    Texts(Vec<String>),
    Ints(Vec<i64>),
    Times(Vec<DateTime<Utc>>),
}

impl From<&Scalar> for Arg {
    fn from(value: &Scalar) -> Self {
        match value {
            Scalar::Text(s) => Arg::Text(s.clone()),
            Scalar::Time(t) => Arg::Time(time::from_micros(*t)),
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

impl From<DateTime<Utc>> for Arg {
    fn from(value: DateTime<Utc>) -> Self {
        Arg::Time(value)
    }
}

/// A statement under construction and its arguments, in placeholder order.
#[derive(Debug, Default, Clone)]
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

    /// Appends a `$n` placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends a column name from core's fixed field lists, quoted.
    pub fn column(&mut self, column: &Column) -> &mut Self {
        self.text.push('"');
        self.text.push_str(column.name);
        self.text.push('"');
        self
    }

    /// Appends another statement's text and arguments, renumbering its placeholders.
    pub fn append(&mut self, other: Sql) -> &mut Self {
        let offset = self.args.len();
        let mut rest = other.text.as_str();
        while let Some(i) = rest.find('$') {
            self.text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            match after[..digits].parse::<usize>() {
                Ok(n) => {
                    self.text.push('$');
                    self.text.push_str(&(n + offset).to_string());
                }
                Err(_) => self.text.push('$'),
            }
            rest = &after[digits..];
        }
        self.text.push_str(rest);
        self.args.extend(other.args);
        self
    }

    /// The statement, ready to run.
    pub fn query(self) -> Query<'static, Postgres, PgArguments> {
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

/// `usize` as a PostgreSQL bigint, saturating.
pub(crate) fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn push_field(sql: &mut Sql, field: &Field, labels_column: &str) {
    match field {
        Field::Column(c) => {
            sql.column(c);
        }
        Field::Label(key) => {
            sql.push("((")
                .push(labels_column)
                .push(" ->> ")
                .bind(key.as_str())
                .push(") COLLATE \"C\")");
        }
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

/// Appends one filter as a condition. `labels_column` names the `jsonb` column `labels.<key>`
/// fields read (a fixed name, alerts only).
pub(crate) fn push_filter(sql: &mut Sql, filter: &Filter, labels_column: &str) {
    let ty = filter.field.ty();
    match (&filter.value, filter.op) {
        (FilterValue::Many(list), FilterOp::NotIn) => {
            if list.is_empty() {
                sql.push("TRUE");
            } else {
                // NOT (NULL = ANY(…)) is NULL: an absent value passes `not_in`.
                sql.push("COALESCE(NOT (");
                push_field(sql, &filter.field, labels_column);
                sql.push(" = ANY(")
                    .bind(list_arg(ty, list))
                    .push(")), TRUE)");
            }
        }
        (FilterValue::Many(list), _) => {
            if list.is_empty() {
                sql.push("FALSE");
            } else {
                push_field(sql, &filter.field, labels_column);
                sql.push(" = ANY(").bind(list_arg(ty, list)).push(")");
            }
        }
        (FilterValue::One(_), FilterOp::In | FilterOp::NotIn) => {
            sql.push("FALSE");
        }
        (FilterValue::One(value), op) => {
            // Conditions are only ever joined with AND at the top of a WHERE clause, where NULL
            // (an absent value) fails like false, as `matches` wants for every operator but
            // `ne`, which `IS DISTINCT FROM` makes true for NULL.
            if op == FilterOp::Contains {
                sql.push("strpos(");
                push_field(sql, &filter.field, labels_column);
                sql.push(", ").bind(value).push(") > 0");
                return;
            }
            let operator = match op {
                FilterOp::Ne => " IS DISTINCT FROM ",
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

/// Appends the order (absent values first ascending, last descending), the tie-breaker and
/// the page.
pub(crate) fn push_order_and_page(sql: &mut Sql, options: &ResolvedOptions, tie_breaker: Column) {
    sql.push(" ORDER BY ").column(&options.sort_by);
    sql.push(match options.sort_order {
        SortOrder::Asc => " ASC NULLS FIRST",
        SortOrder::Desc => " DESC NULLS LAST",
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
