//! Line protocol encoding, and InfluxQL quoting.
//!
//! # Line protocol
//! `measurement[,tag=value…] field=value[,…] timestamp`. Escaping, as every InfluxDB parser reads
//! it: in measurements a comma and a space take a backslash; in tag keys, tag values and field
//! keys a comma, `=` and a space do; in string field values a double quote and a backslash do.
//! Newlines cannot be escaped anywhere: validation rejects control characters before any write.
//!
//! InfluxDB 1.x does **not** unescape a backslash in a tag (`a\\b` is stored as two
//! backslashes), and a tag value that ends in one (`k=\ f=1`) swallows the space after it, so no
//! escaping can carry every string through every server generation. aimon therefore stores tag
//! keys and values (sample tags, series ids, agent ids) percent-encoded in exactly two
//! characters, `%` as `%25` and `\` as `%5C`, and decodes them when it reads: everything else
//! (quotes, commas, `=`, spaces, `*`, emoji) is stored as it is and shows as it is in other
//! tools. InfluxQL string literals compared with tags go through the same encoding
//! ([`tag_literal`]).
//!
//! # InfluxQL
//! Identifiers are double-quoted, string literals single-quoted, with `\` before a backslash or
//! the quote character: nothing the caller passes is ever spliced in unquoted.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The percent-encoding of tag text: `%` → `%25`, `\` → `%5C`; anything else unchanged.
pub fn encode_tag_text(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '\\']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\\' => out.push_str("%5C"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The inverse of [`encode_tag_text`]; other `%` sequences (written by other tools) stay.
pub fn decode_tag_text(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else if let Some(after) = tail
            .strip_prefix("%5C")
            .or_else(|| tail.strip_prefix("%5c"))
        {
            out.push('\\');
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends `s`, with a backslash before every character `special` accepts (ASCII only).
fn push_escaped(out: &mut String, s: &str, special: impl Fn(u8) -> bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if special(*b) {
            // `i` is a char boundary: the special characters are ASCII.
            out.push_str(&s[start..i]);
            out.push('\\');
            start = i;
        }
    }
    out.push_str(&s[start..]);
}

/// Appends a measurement name, escaped.
pub fn push_measurement(out: &mut String, s: &str) {
    push_escaped(out, s, |b| matches!(b, b',' | b' '));
}

/// Appends a tag key, tag value or field key, escaped (after [`encode_tag_text`] for tags).
pub fn push_key(out: &mut String, s: &str) {
    push_escaped(out, s, |b| matches!(b, b',' | b'=' | b' '));
}

/// Appends a tag text: percent-encoded, then escaped.
pub fn push_tag(out: &mut String, s: &str) {
    push_key(out, &encode_tag_text(s));
}

/// Appends a string field value with its quotes.
pub fn push_string_field(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s, |b| matches!(b, b'"' | b'\\'));
    out.push('"');
}

/// Appends a float field value: the shortest text that reads back as the same `f64`.
pub fn push_float(out: &mut String, v: f64) {
    // `ryu`'s shortest round-trip form, with an exponent for very large or small magnitudes
    // (`1e300`), which every InfluxDB parser reads. Values are finite (validated). zmij
    // prints the same digits in the same layout, except `e+` for a positive exponent: the `+`
    // is dropped so that the bytes are ryu's exactly.
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format(v);
    match text.bytes().position(|b| b == b'+') {
        // `+` only ever follows the `e`, an ASCII byte: both ends are char boundaries.
        Some(plus) => {
            out.push_str(&text[..plus]);
            out.push_str(&text[plus + 1..]);
        }
        None => out.push_str(text),
    }
}

/// Appends an integer field value (`123i`).
pub fn push_int(out: &mut String, v: i64) {
    let _ = write!(out, "{v}i");
}

/// An InfluxQL identifier: `"name"` with `\` and `"` escaped.
pub fn ident(s: &str) -> String {
    quote(s, '"')
}

/// An InfluxQL string literal: `'text'` with `\` and `'` escaped.
pub fn string(s: &str) -> String {
    quote(s, '\'')
}

/// An InfluxQL string literal of a tag text, encoded as stored ([`encode_tag_text`]).
pub fn tag_literal(s: &str) -> String {
    string(&encode_tag_text(s))
}

fn quote(s: &str, q: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        if c == q || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(q);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb_line_protocol::{FieldValue, parse_lines};
    use proptest::prelude::*;

    fn line(measurement: &str, tag_key: &str, tag_value: &str, text: &str, v: f64) -> String {
        let mut out = String::new();
        push_measurement(&mut out, measurement);
        out.push(',');
        push_tag(&mut out, tag_key);
        out.push('=');
        push_tag(&mut out, tag_value);
        out.push(' ');
        push_key(&mut out, "s");
        out.push('=');
        push_string_field(&mut out, text);
        out.push_str(",v=");
        push_float(&mut out, v);
        out.push_str(" 1700000000000000");
        out
    }

    /// Valid aimon text: non-empty, no control characters (validation rejects those).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\\p{Cc}]{1,40}",
            // The characters that matter, densely.
            proptest::collection::vec(
                prop_oneof![
                    Just(","),
                    Just(" "),
                    Just("="),
                    Just("\""),
                    Just("'"),
                    Just("\\"),
                    Just("%"),
                    Just("%25"),
                    Just("%5C"),
                    Just("🚀"),
                    Just("a"),
                    Just("*"),
                ],
                1..12
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Everything aimon writes parses back, through an independent line-protocol parser, to
        /// exactly what was given (tags after decoding).
        #[test]
        fn lines_round_trip_through_a_parser(
            // A line starting with `#` is a comment; aimon's measurements are fixed ASCII names.
            measurement in "[^\\p{Cc}\\\\#][^\\p{Cc}\\\\]{0,19}",
            key in text(),
            value in text(),
            s in "[^\\p{Cc}]{0,40}|[\\\\\"]{1,6}",
            v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
        ) {
            let text = line(&measurement, &key, &value, &s, v);
            let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(parsed.len(), 1);
            let p = &parsed[0];
            prop_assert_eq!(p.series.measurement.to_string(), measurement.clone());
            let tags = p.series.tag_set.as_ref().expect("one tag");
            prop_assert_eq!(tags.len(), 1);
            prop_assert_eq!(decode_tag_text(&tags[0].0.to_string()).into_owned(), key.clone());
            prop_assert_eq!(decode_tag_text(&tags[0].1.to_string()).into_owned(), value.clone());
            match &p.field_set[0].1 {
                FieldValue::String(got) => prop_assert_eq!(got.to_string(), s.clone()),
                other => prop_assert!(false, "not a string: {other:?}"),
            }
            match &p.field_set[1].1 {
                FieldValue::F64(got) => prop_assert_eq!(got.to_bits(), v.to_bits()),
                other => prop_assert!(false, "not a float: {other:?}"),
            }
            prop_assert_eq!(p.timestamp, Some(1_700_000_000_000_000));
        }

        /// No tag text aimon writes contains a backslash except before `,`, `=` or a space.
        #[test]
        fn encoded_tags_never_end_in_or_carry_a_bare_backslash(value in text()) {
            let mut out = String::new();
            push_tag(&mut out, &value);
            let bytes = out.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\\' {
                    prop_assert!(matches!(bytes.get(i + 1), Some(b',' | b'=' | b' ')), "{out:?}");
                }
            }
        }

        /// `push_float` writes exactly ryu's text, for any finite bit pattern.
        #[test]
        fn floats_are_written_as_ryu_writes_them(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            let mut out = String::new();
            push_float(&mut out, v);
            let mut reference = ryu::Buffer::new();
            prop_assert_eq!(out.as_str(), reference.format_finite(v));
        }

        #[test]
        fn tag_encoding_round_trips(value in text()) {
            prop_assert_eq!(decode_tag_text(&encode_tag_text(&value)).into_owned(), value.clone());
        }

        /// A quoted literal or identifier never ends early: the only unescaped quote is the last.
        #[test]
        fn influxql_quoting_cannot_be_escaped(value in text()) {
            for (quoted, q) in [(string(&value), b'\''), (ident(&value), b'"')] {
                let bytes = quoted.as_bytes();
                let mut i = 1;
                let mut closed_at = None;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b if b == q => { closed_at = Some(i); break; }
                        _ => i += 1,
                    }
                }
                prop_assert_eq!(closed_at, Some(bytes.len() - 1), "{}", quoted);
            }
        }
    }

    #[test]
    fn escaping_examples() {
        let mut out = String::new();
        push_tag(&mut out, "a b,c=d\\e%f");
        assert_eq!(out, "a\\ b\\,c\\=d%5Ce%25f");
        assert_eq!(string("it's \\ done"), "'it\\'s \\\\ done'");
        assert_eq!(ident("we\"ird"), "\"we\\\"ird\"");
        assert_eq!(tag_literal("50%"), "'50%25'");
        let mut f = String::new();
        push_float(&mut f, 1e300);
        push_float(&mut f, -0.0);
        push_float(&mut f, 0.1);
        assert_eq!(f, "1e300-0.00.1");
        assert_eq!(decode_tag_text("100%"), "100%");
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.5,
            1e15,
            1e16,
            1e17,
            123456789012345680.0,
            9007199254740993.0,
            1e-5,
            1e-6,
            0.000123,
            1.7976931348623157e308,
            f64::MIN_POSITIVE,
            5e-324,
            -2.2250738585072014e-308,
            100.0 + 1.5 * 96.0,
        ] {
            let mut out = String::new();
            push_float(&mut out, v);
            let mut reference = ryu::Buffer::new();
            assert_eq!(out, reference.format_finite(v), "{v:e}");
        }
    }
}
