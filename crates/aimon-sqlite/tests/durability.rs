//! The `synchronous` option reaches every connection of the pool as SQLite's own
//! `PRAGMA synchronous`, and an unknown value is refused.

use aimon_core::Contract;
use aimon_core::{ErrorKind, StorageConfig};
use aimon_sqlite::SqliteBackend;

async fn synchronous_of(dir: &std::path::Path, value: Option<&str>) -> i64 {
    let mut config =
        StorageConfig::from_url("sync", format!("sqlite://{}", dir.join("s.db").display()))
            .unwrap();
    if let Some(value) = value {
        config = config.option("synchronous", value);
    }
    let store = Contract::new(SqliteBackend::connect(&config).await.unwrap());
    // Every pooled connection, not just the first: hold several at once.
    let mut held = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool().acquire().await.unwrap();
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        seen.push(level);
        held.push(conn);
    }
    drop(held);
    store.pool().close().await;
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    seen[0]
}

#[tokio::test]
async fn synchronous_option_is_what_the_connections_use() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite's numbering: OFF 0, NORMAL 1, FULL 2, EXTRA 3.
    assert_eq!(synchronous_of(dir.path(), None).await, 1, "default normal");
    for (value, level) in [("off", 0), ("normal", 1), ("FULL", 2), ("extra", 3)] {
        assert_eq!(
            synchronous_of(dir.path(), Some(value)).await,
            level,
            "{value}"
        );
    }
}

#[tokio::test]
async fn an_unknown_synchronous_value_is_config_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::from_url(
        "sync",
        format!("sqlite://{}", dir.path().join("s.db").display()),
    )
    .unwrap()
    .option("synchronous", "sometimes");
    let Err(err) = SqliteBackend::connect(&config).await else {
        panic!("an unknown value must be refused");
    };
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("synchronous"), "{err}");
}
