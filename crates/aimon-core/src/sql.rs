//! Building SQL at run time for the SQL drivers: every value is a bind parameter; only column
//! names from core's fixed field lists, fixed SQL text and placeholders are ever written into a
//! statement. No database client here: a [`Sql`] is the text and its [`Arg`]s in placeholder
//! order, and each driver binds them with its own client.
//!
//! [`Filter`]s translate into `WHERE` conditions with exactly the meaning of
//! [`crate::filter::matches`]: an absent value (SQL `NULL`) passes only `ne` and `not_in`. What
//! differs between databases (placeholders, how labels and lists are read, `NULL` ordering…) is
//! the [`Dialect`]'s.

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};

use crate::SortOrder;
use crate::query::{Column, Field, Filter, FilterOp, FilterValue, ResolvedOptions, Scalar};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A text value.
    Text(String),
    /// An integer (microseconds where the dialect stores times so).
    Int(i64),
    /// A timestamp.
    Time(DateTime<Utc>),
    /// A list of texts (`in` / `not_in`).
    Texts(Vec<String>),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of timestamps.
    Times(Vec<DateTime<Utc>>),
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

/// What one database spells its own way.
pub trait Dialect: Sized {
    /// Placeholders are numbered (`$1`, `$2`…) rather than positional (`?`).
    const NUMBERED: bool;
    /// A condition that always holds.
    const TRUE: &'static str;
    /// A condition that never holds.
    const FALSE: &'static str;
    /// `ne`, true where the stored value is absent.
    const NOT_EQUAL: &'static str;
    /// The function `contains` calls: `(haystack, needle)`, the 1-based position or 0.
    const POSITION: &'static str;
    /// The ascending order keyword, absent values first.
    const ASC: &'static str;
    /// The descending order keyword, absent values last.
    const DESC: &'static str;

    /// A filter value as this database stores it (times as timestamps or microseconds…).
    fn scalar(value: &Scalar) -> Arg;

    /// Appends the value of `labels.<key>`, read from the JSON column `labels_column`.
    fn push_label(sql: &mut Sql<Self>, labels_column: &str, key: &str);

    /// Appends `in` (or, `not_in`, `not in`) for a non-empty `list`; an absent value must pass
    /// `not_in`.
    fn push_in(
        sql: &mut Sql<Self>,
        field: &Field,
        labels_column: &str,
        list: &[Scalar],
        not_in: bool,
    );
}

/// A statement under construction and its arguments, in placeholder order.
pub struct Sql<D> {
    /// The statement so far.
    pub text: String,
    /// Its arguments, in placeholder order.
    pub args: Vec<Arg>,
    dialect: PhantomData<D>,
}

impl<D> fmt::Debug for Sql<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sql")
            .field("text", &self.text)
            .field("args", &self.args)
            .finish()
    }
}

impl<D> Clone for Sql<D> {
    fn clone(&self) -> Self {
        Sql {
            text: self.text.clone(),
            args: self.args.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D> Default for Sql<D> {
    fn default() -> Self {
        Sql::new("")
    }
}

impl<D> Sql<D> {
    /// A statement starting with `text`, without arguments.
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
            dialect: PhantomData,
        }
    }

    /// Appends fixed SQL text (never data).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a column name from core's fixed field lists, quoted.
    pub fn column(&mut self, column: &Column) -> &mut Self {
        self.text.push('"');
        self.text.push_str(column.name);
        self.text.push('"');
        self
    }
}

impl<D: Dialect> Sql<D> {
    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        if D::NUMBERED {
            self.text.push('$');
            self.text.push_str(&self.args.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends a placeholder bound to a filter value, as the dialect stores it.
    pub fn bind_scalar(&mut self, value: &Scalar) -> &mut Self {
        self.bind(D::scalar(value))
    }

    /// Appends another statement's text and arguments, renumbering numbered placeholders.
    pub fn append(&mut self, other: Sql<D>) -> &mut Self {
        if !D::NUMBERED {
            self.text.push_str(&other.text);
            self.args.extend(other.args);
            return self;
        }
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
}

/// `usize` as a SQL bigint, saturating.
pub fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends the value a filter reads: a quoted column, or a label through the dialect.
pub fn push_field<D: Dialect>(sql: &mut Sql<D>, field: &Field, labels_column: &str) {
    match field {
        Field::Column(c) => {
            sql.column(c);
        }
        Field::Label(key) => D::push_label(sql, labels_column, key),
    }
}

/// Appends one filter as a condition. `labels_column` names the JSON column `labels.<key>`
/// fields read (a fixed name, alerts only).
pub fn push_filter<D: Dialect>(sql: &mut Sql<D>, filter: &Filter, labels_column: &str) {
    match (&filter.value, filter.op) {
        (FilterValue::Many(list), FilterOp::NotIn) => {
            if list.is_empty() {
                sql.push(D::TRUE);
            } else {
                D::push_in(sql, &filter.field, labels_column, list, true);
            }
        }
        (FilterValue::Many(list), _) => {
            if list.is_empty() {
                sql.push(D::FALSE);
            } else {
                D::push_in(sql, &filter.field, labels_column, list, false);
            }
        }
        (FilterValue::One(_), FilterOp::In | FilterOp::NotIn) => {
            sql.push(D::FALSE);
        }
        (FilterValue::One(value), op) => {
            // Conditions are only ever joined with AND at the top of a WHERE clause, where NULL
            // (an absent value) fails like false, as `matches` wants for every operator but
            // `ne`, which the dialect's NOT_EQUAL makes true for NULL.
            if op == FilterOp::Contains {
                sql.push(D::POSITION).push("(");
                push_field(sql, &filter.field, labels_column);
                sql.push(", ").bind_scalar(value).push(") > 0");
                return;
            }
            let operator = match op {
                FilterOp::Ne => D::NOT_EQUAL,
                FilterOp::Gt => " > ",
                FilterOp::Gte => " >= ",
                FilterOp::Lt => " < ",
                FilterOp::Lte => " <= ",
                _ => " = ",
            };
            push_field(sql, &filter.field, labels_column);
            sql.push(operator).bind_scalar(value);
        }
    }
}

/// Appends ` AND <filter>` for every filter.
pub fn push_filters<D: Dialect>(sql: &mut Sql<D>, options: &ResolvedOptions, labels_column: &str) {
    for filter in &options.filters {
        sql.push(" AND ");
        push_filter(sql, filter, labels_column);
    }
}

/// Appends the order (absent values first ascending, last descending), the tie-breaker and
/// the page.
pub fn push_order_and_page<D: Dialect>(
    sql: &mut Sql<D>,
    options: &ResolvedOptions,
    tie_breaker: Column,
) {
    sql.push(" ORDER BY ").column(&options.sort_by);
    sql.push(match options.sort_order {
        SortOrder::Asc => D::ASC,
        SortOrder::Desc => D::DESC,
    });
    if options.sort_by.name != tie_breaker.name {
        sql.push(", ").column(&tie_breaker).push(" ASC");
    }
    sql.push(" LIMIT ")
        .bind(int(options.limit))
        .push(" OFFSET ")
        .bind(int(options.offset));
}
