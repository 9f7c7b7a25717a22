//! Parsers for the text forms of query values: durations, times, `key=value` pairs, filters and
//! sort keys, shared by the command line and the HTTP API (`aimon serve`).
//!
//! Each returns a `String` error that names what is wrong, so clap or an HTTP error can show it
//! as one line.

use chrono::{DateTime, TimeDelta, Utc};

use crate::query::{FilterOp, QueryFilter, SortOrder};

/// Parses `500ms`, `10s`, `5m`, `6h`, `1d`, `2w` (also combined: `1h30m`). Zero is allowed.
pub fn duration(text: &str) -> Result<TimeDelta, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; expected e.g. 500ms, 10s, 5m, 6h or 1d".into());
    }
    let bad = || format!("invalid duration {text:?}; expected e.g. 500ms, 10s, 5m, 6h or 1d");
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(millis_per_unit)
            .and_then(|ms| total.checked_add(ms))
            .filter(|ms| *ms <= 1_000 * 365 * 86_400_000)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    Ok(TimeDelta::milliseconds(total))
}

/// A duration that must be greater than zero (steps, intervals).
pub fn positive_duration(text: &str) -> Result<TimeDelta, String> {
    let d = duration(text)?;
    if d <= TimeDelta::zero() {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    Ok(d)
}

/// A point in time: RFC 3339 (`2024-05-01T12:00:00Z`), `now`, or a duration ago (`6h`).
pub fn time_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Ok(ts.with_timezone(&Utc));
    }
    let ago = duration(s).map_err(|_| {
        format!("invalid time {text:?}; expected RFC 3339 (2024-05-01T12:00:00Z), `now`, or a duration ago such as 6h")
    })?;
    now.checked_sub_signed(ago)
        .ok_or_else(|| format!("time {text:?} is out of range"))
}

/// Validates a `--since`/`--until` value at parse time; resolved against the clock later.
pub fn time_spec(text: &str) -> Result<String, String> {
    time_at(text, Utc::now()).map(|_| text.to_owned())
}

/// A run id (`aimon demo --run`): 1 to 64 ASCII letters, digits, `.`, `_` or `-`, so it fits
/// in ids, tags and labels and is easy to type in a filter.
pub fn run_id(text: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid run id {text:?}; expected 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// `key=value`; the value may be empty only if written explicitly (`key=`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        Some(_) => Err(format!("invalid pair {text:?}: the key is empty")),
        None => Err(format!("invalid pair {text:?}; expected KEY=VALUE")),
    }
}

/// `KEY=VALUE` pairs as a tag set. A key given twice with two values is an error: a sample
/// (or an alert) carries one value per key, so the filter could never match, and keeping
/// either value silently would answer another question than the one asked.
pub fn tag_set(pairs: impl IntoIterator<Item = (String, String)>) -> Result<crate::Tags, String> {
    let mut tags = crate::Tags::new();
    for (key, value) in pairs {
        if let Some(before) = tags.get(&key)
            && *before != value
        {
            return Err(format!(
                "{key:?} is given twice ({key}={before}, {key}={value}); a sample carries one value per key"
            ));
        }
        tags.insert(key, value);
    }
    Ok(tags)
}

/// `FIELD` or `FIELD:asc` / `FIELD:desc`.
pub fn sort(text: &str) -> Result<(String, SortOrder), String> {
    let (field, order) = match text.rsplit_once(':') {
        Some((f, o)) => {
            let order = match o.to_ascii_lowercase().as_str() {
                "asc" => SortOrder::Asc,
                "desc" => SortOrder::Desc,
                _ => return Err(format!("invalid sort order {o:?}; expected asc or desc")),
            };
            (f, order)
        }
        None => (text, SortOrder::Asc),
    };
    if field.trim().is_empty() {
        return Err(format!("invalid sort {text:?}; expected FIELD[:asc|:desc]"));
    }
    Ok((field.trim().to_owned(), order))
}

fn operator(token: &str) -> Option<FilterOp> {
    Some(match token.to_ascii_lowercase().as_str() {
        "=" | "==" | "eq" => FilterOp::Eq,
        "!=" | "<>" | "ne" => FilterOp::Ne,
        ">" | "gt" => FilterOp::Gt,
        ">=" | "gte" => FilterOp::Gte,
        "<" | "lt" => FilterOp::Lt,
        "<=" | "lte" => FilterOp::Lte,
        "in" => FilterOp::In,
        "not_in" | "notin" | "!in" => FilterOp::NotIn,
        "contains" | "~" => FilterOp::Contains,
        _ => return None,
    })
}

fn is_time_field(field: &str) -> bool {
    field.ends_with("_at") || field.ends_with("_time") || field == "last_heartbeat"
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_owned();
        }
    }
    s.to_owned()
}

/// One scalar of a filter: a time field also takes a duration ago (`6h`) or `now`.
fn scalar(field: &str, raw: &str, now: DateTime<Utc>) -> serde_json::Value {
    let text = unquote(raw);
    if is_time_field(field)
        && DateTime::parse_from_rfc3339(&text).is_err()
        && let Ok(ts) = time_at(&text, now)
    {
        return serde_json::Value::String(crate::time::format(ts));
    }
    serde_json::Value::String(text)
}

/// `field op value`, e.g. `severity >= high`, `status in active,acknowledged`,
/// `labels.region eq "eu west"`, `start_time > 2h`. The field and operator are checked by the
/// store, which knows each kind's field list; this only splits and types the value.
pub fn filter_at(text: &str, now: DateTime<Utc>) -> Result<QueryFilter, String> {
    let usage = || {
        format!(
            "invalid filter {text:?}; expected 'FIELD OP VALUE' with OP one of \
             eq ne gt gte lt lte in not_in contains (or = != > >= < <=)"
        )
    };
    let s = text.trim();
    let field_end = s
        .find(|c: char| c.is_whitespace() || "=!<>~".contains(c))
        .ok_or_else(usage)?;
    let field = &s[..field_end];
    let rest = s[field_end..].trim_start();
    let op_end = if rest.starts_with(|c: char| "=!<>~".contains(c)) {
        rest.find(|c: char| !"=!<>~".contains(c))
            .unwrap_or(rest.len())
    } else {
        rest.find(char::is_whitespace).unwrap_or(rest.len())
    };
    let op_token = &rest[..op_end];
    let value = rest[op_end..].trim();
    if field.is_empty() || value.is_empty() {
        return Err(usage());
    }
    let op = operator(op_token).ok_or_else(|| {
        format!(
            "invalid filter {text:?}: unknown operator {op_token:?}; expected one of \
             eq ne gt gte lt lte in not_in contains (or = != > >= < <=)"
        )
    })?;
    let value = match op {
        FilterOp::In | FilterOp::NotIn => {
            if value.starts_with('[') {
                serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .filter(serde_json::Value::is_array)
                    .ok_or_else(|| format!("invalid filter {text:?}: malformed JSON array"))?
            } else {
                serde_json::Value::Array(
                    value
                        .split(',')
                        .map(|item| scalar(field, item, now))
                        .collect(),
                )
            }
        }
        _ => scalar(field, value, now),
    };
    Ok(QueryFilter {
        field: field.to_owned(),
        operator: op,
        value,
    })
}

/// A clap value parser for `--filter`.
pub fn filter(text: &str) -> Result<QueryFilter, String> {
    filter_at(text, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_with_two_values_is_an_error() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let tags = tag_set([pair("model", "a"), pair("region", "eu"), pair("model", "a")]).unwrap();
        assert_eq!(tags.len(), 2);
        let error = tag_set([pair("model", "a"), pair("model", "b")]).unwrap_err();
        assert!(
            error.contains("model=a") && error.contains("model=b"),
            "{error}"
        );
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(duration("500ms").unwrap(), TimeDelta::milliseconds(500));
        assert_eq!(duration("10s").unwrap(), TimeDelta::seconds(10));
        assert_eq!(duration("5m").unwrap(), TimeDelta::minutes(5));
        assert_eq!(duration("6h").unwrap(), TimeDelta::hours(6));
        assert_eq!(duration("1d").unwrap(), TimeDelta::days(1));
        assert_eq!(duration("1w").unwrap(), TimeDelta::days(7));
        assert_eq!(duration("1h30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(duration("0s").unwrap(), TimeDelta::zero());
    }

    #[test]
    fn bad_durations_are_named() {
        for bad in [
            "",
            "banana",
            "5",
            "h",
            "5x",
            "-5m",
            "1.5h",
            "5 m",
            "99999999999999999999d",
        ] {
            let err = duration(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(duration("banana").unwrap_err().contains("banana"));
        assert!(duration("9999999d").unwrap_err().contains("too large"));
    }

    #[test]
    fn zero_is_not_a_positive_duration() {
        assert!(
            positive_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(positive_duration("1ms").is_ok());
    }

    #[test]
    fn times_are_rfc3339_now_or_ago() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(time_at("now", now).unwrap(), now);
        assert_eq!(time_at("6h", now).unwrap(), now - TimeDelta::hours(6));
        assert_eq!(
            time_at("2024-01-01T00:00:00+01:00", now).unwrap(),
            DateTime::parse_from_rfc3339("2023-12-31T23:00:00Z")
                .unwrap()
                .to_utc()
        );
        assert!(time_at("yesterday", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(
            key_value("region=eu-west-1").unwrap(),
            ("region".into(), "eu-west-1".into())
        );
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("novalue").unwrap_err().contains("KEY=VALUE"));
        assert!(key_value("=x").is_err());
    }

    #[test]
    fn sort_keys_take_an_optional_direction() {
        assert_eq!(sort("name").unwrap(), ("name".into(), SortOrder::Asc));
        assert_eq!(
            sort("start_time:desc").unwrap(),
            ("start_time".into(), SortOrder::Desc)
        );
        assert!(sort("name:sideways").is_err());
        assert!(sort(":desc").is_err());
    }

    #[test]
    fn filters_split_field_operator_and_value() {
        let now = Utc::now();
        let f = filter_at("severity >= high", now).unwrap();
        assert_eq!(
            (f.field.as_str(), f.operator, f.value),
            ("severity", FilterOp::Gte, serde_json::json!("high"))
        );
        let f = filter_at("status in active,acknowledged", now).unwrap();
        assert_eq!(f.operator, FilterOp::In);
        assert_eq!(f.value, serde_json::json!(["active", "acknowledged"]));
        let f = filter_at(r#"labels.team eq "ml ops""#, now).unwrap();
        assert_eq!(f.value, serde_json::json!("ml ops"));
        let f = filter_at("name!=x", now).unwrap();
        assert_eq!((f.field.as_str(), f.operator), ("name", FilterOp::Ne));
        let f = filter_at(r#"id not_in ["a","b"]"#, now).unwrap();
        assert_eq!(f.value, serde_json::json!(["a", "b"]));
        let f = filter_at("name contains lat ency", now).unwrap();
        assert_eq!(f.value, serde_json::json!("lat ency"));
    }

    #[test]
    fn time_filters_take_relative_values() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let f = filter_at("start_time > 2h", now).unwrap();
        assert_eq!(f.value, serde_json::json!("2024-05-01T10:00:00.000000Z"));
        let f = filter_at("last_heartbeat >= 2024-01-01T00:00:00Z", now).unwrap();
        assert_eq!(f.value, serde_json::json!("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn malformed_filters_are_rejected() {
        let now = Utc::now();
        for bad in [
            "",
            "severity",
            "severity >=",
            "severity like high",
            "id in [1,",
        ] {
            let err = filter_at(bad, now).unwrap_err();
            assert!(err.starts_with("invalid filter"), "{err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Any text: every parser answers Ok or an error message, never panics, and an error
        /// is one line.
        #[test]
        fn no_input_makes_a_parser_panic(text in "\\PC{0,40}|[0-9a-z =!<>~,'\"\\[\\]:._-]{0,40}") {
            let now = Utc::now();
            for result in [
                duration(&text).map(|_| ()),
                positive_duration(&text).map(|_| ()),
                time_at(&text, now).map(|_| ()),
                run_id(&text).map(|_| ()),
                key_value(&text).map(|_| ()),
                sort(&text).map(|_| ()),
                filter_at(&text, now).map(|_| ()),
            ] {
                if let Err(message) = result {
                    proptest::prop_assert!(!message.is_empty());
                }
            }
        }

        /// A duration written as a sum of parts parses to the sum of its parts, in any order
        /// of units, up to the 1,000-year limit; past it, an error naming it too large.
        #[test]
        fn durations_add_their_parts(
            parts in proptest::collection::vec((0i64..1_000_000, 0usize..6), 1..5)
        ) {
            const UNITS: [(&str, i64); 6] = [
                ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000),
                ("d", 86_400_000), ("w", 604_800_000),
            ];
            let text: String = parts
                .iter()
                .map(|(n, u)| format!("{n}{}", UNITS[*u].0))
                .collect();
            let millis: i128 = parts.iter().map(|(n, u)| i128::from(*n) * i128::from(UNITS[*u].1)).sum();
            match duration(&text) {
                Ok(d) => proptest::prop_assert_eq!(i128::from(d.num_milliseconds()), millis),
                Err(e) => {
                    proptest::prop_assert!(millis > 1_000 * 365 * 86_400_000, "{}: {}", text, e);
                    proptest::prop_assert!(e.contains("too large"), "{}", e);
                }
            }
        }

        /// `FIELD OP VALUE` splits into exactly its field, operator and (unquoted) value.
        #[test]
        fn filters_split_into_field_operator_and_value(
            field in "[a-z_][a-z0-9_.]{0,12}",
            op in proptest::sample::select(vec![
                ("eq", FilterOp::Eq), ("=", FilterOp::Eq), ("!=", FilterOp::Ne),
                ("gt", FilterOp::Gt), (">=", FilterOp::Gte), ("<", FilterOp::Lt),
                ("lte", FilterOp::Lte), ("contains", FilterOp::Contains),
            ]),
            value in "[A-Za-z0-9][A-Za-z0-9 ,.:_-]{0,20}[A-Za-z0-9]",
        ) {
            // Field names that end like a time field take durations: keep to text here.
            proptest::prop_assume!(!is_time_field(&field));
            let text = format!("{field} {} \"{value}\"", op.0);
            let parsed = filter_at(&text, Utc::now()).unwrap();
            proptest::prop_assert_eq!(parsed.field, field);
            proptest::prop_assert_eq!(parsed.operator, op.1);
            proptest::prop_assert_eq!(parsed.value, serde_json::Value::String(value));
        }
    }
}
