//! The fault suite on PostgreSQL: the client killed mid-batch (the fixture's server); a
//! private cluster killed with `SIGKILL` mid-batch and restarted; connections cut by
//! `pg_terminate_backend` mid-batch on a private cluster.
#![cfg(feature = "postgres")]
use aimon_integration_tests::{faults, fixtures};

aimon_integration_tests::fault_suite!(
    postgres,
    fixtures::postgres(),
    server_killed_mid_batch_and_restarted = (faults::postgres_server_killed(), 2),
    connection_cut_mid_batch = (faults::postgres_connection_cut(), 3),
);

/// The durability a PostgreSQL store commits with is the server's `synchronous_commit`, `on`
/// unless the URL sets it for aimon's sessions (`options[synchronous_commit]=off`): what every
/// connection of the store's pool shows.
#[test]
fn synchronous_commit_is_what_the_url_says() {
    fixtures::run_check("synchronous_commit", async {
        let Some(fixture) = fixtures::postgres().await else {
            return;
        };
        for (parameter, expected) in [(None, "on"), (Some("off"), "off"), (Some("local"), "local")]
        {
            let mut config = fixture.config(&[]);
            if let Some(value) = parameter {
                with_url_parameter(&mut config, "options[synchronous_commit]", value);
            }
            let store = aimon_postgres::PostgresBackend::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("{parameter:?}: {e}"));
            let mut held = Vec::new();
            for _ in 0..3 {
                let mut conn = store.pool().acquire().await.unwrap();
                let shown: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(shown, expected, "{parameter:?}");
                held.push(conn);
            }
            drop(held);
            aimon_core::Driver::close(&store).await.unwrap();
        }
    });
}

/// The URL's `application_name` (a parameter the driver accepts) names the store's sessions,
/// so an operator can find them in `pg_stat_activity`; without it they are `aimon`.
#[test]
fn application_name_from_the_url_names_the_sessions() {
    fixtures::run_check("application_name", async {
        let Some(fixture) = fixtures::postgres().await else {
            return;
        };
        for (parameter, expected) in [(None, "aimon"), (Some("fleet-7"), "fleet-7")] {
            let mut config = fixture.config(&[]);
            if let Some(value) = parameter {
                with_url_parameter(&mut config, "application_name", value);
            }
            let store = aimon_postgres::PostgresBackend::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("{parameter:?}: {e}"));
            let shown: String = sqlx::query_scalar("SELECT current_setting('application_name')")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(shown, expected, "{parameter:?}");
            aimon_core::Driver::close(&store).await.unwrap();
        }
    });
}

/// Appends `key=value` to the store's URL query.
fn with_url_parameter(config: &mut aimon_core::StorageConfig, key: &str, value: &str) {
    let separator = if config.connection_string.contains('?') {
        '&'
    } else {
        '?'
    };
    config.connection_string = format!("{}{separator}{key}={value}", config.connection_string);
}
