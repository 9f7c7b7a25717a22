//! Point ids and keyword encodings shared by both modes.
//!
//! Qdrant accepts only unsigned integers and UUIDs as point ids, so every point id is the UUIDv5
//! of its data kind and our key under [`AIMON_NAMESPACE`]; the original key is kept in the
//! payload. Labels and tags are also stored as a keyword array of `key=value` strings
//! ([`label_kv`]) because Qdrant reads payload keys as JSON paths: a label key containing `.`,
//! `[` or `"` cannot be addressed as `labels.<key>`, while an exact keyword match on its
//! `key=value` string always works.

use uuid::Uuid;

/// The UUIDv5 namespace of every aimon point id. Never change it: stored points would no longer
/// be found by their keys.
pub const AIMON_NAMESPACE: Uuid = Uuid::from_u128(0x6a1d_0e5c_7f3b_4c1e_9d2a_51b0_c0ff_ee01);

/// The point id of the item with key `key` in the collection of data kind `kind`.
pub fn point_id(kind: &str, key: &str) -> Uuid {
    let mut name = Vec::with_capacity(kind.len() + 1 + key.len());
    name.extend_from_slice(kind.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&AIMON_NAMESPACE, &name)
}

/// The point id of one sample: its series, timestamp (µs) and canonical tags JSON, the key of
/// DESIGN.md rule 1, so rewriting a sample overwrites its point.
pub fn sample_point_id(series_id: &str, ts_micros: i64, tags_json: &str) -> Uuid {
    let key = format!("{series_id}\0{ts_micros}\0{tags_json}");
    point_id("sample", &key)
}

/// `key=value` with `\` and `=` in the key backslash-escaped, so `("a=b", "c")` and
/// `("a", "b=c")` never meet. The value needs no escape: the first unescaped `=` ends the key.
pub fn label_kv(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 1);
    for c in key.chars() {
        if c == '\\' || c == '=' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('=');
    out.push_str(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_deterministic_uuids_per_kind() {
        let a = point_id("alert", "alert-42");
        assert_eq!(a, point_id("alert", "alert-42"));
        assert_ne!(a, point_id("agent_state", "alert-42"));
        assert_eq!(a.get_version_num(), 5);
        // Pinned: a change of namespace or key layout would orphan stored points.
        assert_eq!(
            point_id("alert", "x").to_string(),
            Uuid::new_v5(&AIMON_NAMESPACE, b"alert\0x").to_string()
        );
    }

    #[test]
    fn keys_of_one_kind_and_equal_keys_of_two_kinds_differ() {
        // Kinds are fixed names and validated keys hold no control characters, so the NUL
        // separator cannot be forged.
        assert_ne!(point_id("alert", "ab"), point_id("alert", "a b"));
        assert_ne!(point_id("series", "x"), point_id("alert", "x"));
        assert!(aimon_core::validate::name("id", "a\0b").is_err());
    }

    #[test]
    fn sample_ids_follow_the_sample_key() {
        let a = sample_point_id("s", 1, "{}");
        assert_eq!(a, sample_point_id("s", 1, "{}"));
        assert_ne!(a, sample_point_id("s", 2, "{}"));
        assert_ne!(a, sample_point_id("s", 1, r#"{"k":"v"}"#));
    }

    #[test]
    fn label_kv_escapes_the_key_only() {
        assert_eq!(label_kv("env", "prod"), "env=prod");
        assert_ne!(label_kv("a=b", "c"), label_kv("a", "b=c"));
        assert_eq!(label_kv("a=b", "c"), r"a\=b=c");
        assert_eq!(label_kv(r"a\", "=b"), r"a\\==b");
        assert_ne!(label_kv(r"a\", "=b"), label_kv(r"a\=", "b"));
        assert_eq!(label_kv("a.b[0]\"c\"", "v"), "a.b[0]\"c\"=v");
    }
}
