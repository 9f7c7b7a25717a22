//! Property tests of the connection-string parsers every user's URL reaches: the registry's
//! scheme lookup (`StorageConfig::from_url`) and each driver's own parsing of the URL and its
//! options. Whatever the text, a parser answers a configuration or a `ConfigInvalid` error (it
//! never panics), and a secret given in the URL shows neither in the error nor in the parsed
//! configuration's `Debug`.
#![cfg(all(
    feature = "sqlite",
    feature = "redis",
    feature = "postgres",
    feature = "influxdb",
    feature = "qdrant-edge"
))]

use aimon_core::{ErrorKind, StorageBackendType, StorageConfig};
use proptest::prelude::*;

/// Parses `url` as the registry would, then with the driver of its scheme; returns the
/// configuration's `Debug` text or the error.
fn parse(url: &str) -> Result<String, aimon_core::Error> {
    let config = StorageConfig::from_url("p", url)?;
    parse_config(&config)
}

fn parse_config(config: &StorageConfig) -> Result<String, aimon_core::Error> {
    Ok(match config.backend_type {
        StorageBackendType::Sqlite => {
            format!(
                "{:?}",
                aimon_sqlite::config::SqliteConfig::from_storage_config(config)?
            )
        }
        StorageBackendType::Redis => {
            format!(
                "{:?}",
                aimon_redis::RedisConfig::from_storage_config(config)?
            )
        }
        StorageBackendType::Postgres | StorageBackendType::Timescale => {
            format!(
                "{:?}",
                aimon_postgres::PostgresConfig::from_storage_config(config)?
            )
        }
        StorageBackendType::Influxdb => {
            format!(
                "{:?}",
                aimon_influxdb::InfluxConfig::parse(config, |_| None)?
            )
        }
        StorageBackendType::Qdrant => {
            format!("{:?}", aimon_qdrant::QdrantConfig::parse(config, None)?)
        }
        other => format!("{other:?}"),
    })
}

const SCHEMES: &[&str] = &[
    "sqlite",
    "memory",
    "redis",
    "rediss",
    "redis+sentinel",
    "redis+cluster",
    "postgres",
    "postgresql",
    "timescale",
    "influxdb",
    "influxdb+https",
    "influxdb2",
    "qdrant",
    "qdrant-edge",
];

/// Text a URL may hold, hostile parts included.
fn url_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SCHEMES),
        prop::sample::select(vec!["://", ":", ":///", "://u:p@", "://:@", ""]),
        "[a-z0-9.:@/?&=%#\\[\\]_+-]{0,30}|\\PC{0,30}",
    )
        .prop_map(|(scheme, sep, rest)| format!("{scheme}{sep}{rest}"))
}

/// A URL of `scheme` with `secret` as its password and as the value of query parameters
/// named like secrets or unknown to the backend.
fn url_with_secret() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(SCHEMES),
        "[A-Za-z0-9]{10,16}",
        prop::collection::vec(
            prop::sample::select(vec![
                "password",
                "sslpassword",
                "token",
                "api_key",
                "secret",
                "bogus",
                "shema",
                "options[",
                "db_password",
            ]),
            0..3,
        ),
        prop::sample::select(vec!["", "sslmode=require", "schema=s", "db=x", "tls=true"]),
        any::<bool>(),
    )
        .prop_map(|(scheme, secret, keys, plain, in_userinfo)| {
            let secret = format!("SeCrEt{secret}");
            let auth = if in_userinfo {
                format!("user:{secret}@")
            } else {
                String::new()
            };
            let mut query: Vec<String> = keys.iter().map(|k| format!("{k}={secret}")).collect();
            if !plain.is_empty() {
                query.push(plain.to_owned());
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            (format!("{scheme}://{auth}127.0.0.1:1/db{query}"), secret)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// Any text: a configuration or `ConfigInvalid`, never a panic or another kind.
    #[test]
    fn any_url_is_parsed_or_refused_as_config_invalid(url in url_text()) {
        if let Err(e) = parse(&url) {
            prop_assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{}: {}", url, e);
            prop_assert!(!e.to_string().contains(|c: char| c.is_control()), "{:?}", e.to_string());
        }
    }

    /// A password in the URL, or a value under a secret-like or unknown parameter, never shows
    /// in the error or in the parsed configuration's `Debug`.
    #[test]
    fn secrets_show_in_no_error_and_no_debug((url, secret) in url_with_secret()) {
        match parse(&url) {
            Ok(debug) => prop_assert!(!debug.contains(&secret), "{}: {}", url, debug),
            Err(e) => {
                prop_assert!(!e.to_string().contains(&secret), "{}: {}", url, e);
                prop_assert!(!format!("{e:?}").contains(&secret), "{}: {:?}", url, e);
            }
        }
    }

    /// Options of any name and any JSON value: a configuration or `ConfigInvalid`.
    #[test]
    fn any_option_is_taken_or_refused_as_config_invalid(
        scheme_url in prop::sample::select(vec![
            "sqlite::memory:",
            "redis://127.0.0.1:1",
            "postgres://127.0.0.1:1/db",
            "influxdb://127.0.0.1:1/db",
            "qdrant://127.0.0.1:1",
            "memory://",
        ]),
        key in "[a-z_]{1,24}|metric_ttl_seconds|max_connections|batch_lines|schema|tls",
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "\\PC{0,20}".prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([1, "x"])),
        ],
    ) {
        let config = StorageConfig::from_url("p", scheme_url).unwrap().option(&key, value);
        if let Err(e) = parse_config(&config) {
            prop_assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{} {}: {}", scheme_url, key, e);
        }
    }
}
