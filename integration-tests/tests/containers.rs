//! The container tier itself (`fixtures::containers`), against the real Docker engine of
//! `DOCKER_HOST`: servers run with host networking only, an absent image is never pulled, and
//! the backends `AIMON_TEST_VIA` names really run in containers. Without a Docker engine these
//! checks report `SKIPPED docker` (or fail, where `AIMON_REQUIRE` names `docker`, as in CI).
#![cfg(feature = "containers")]

use aimon_integration_tests::fixtures::{
    self, ContainerSpec, ServerSource, ServerSpec, containers, run_check,
};
use testcontainers::bollard;

/// `Some(engine)` where a Docker engine answers, else `None` after [`fixtures::skip`].
async fn docker() -> Option<bollard::Docker> {
    let engine = match bollard::Docker::connect_with_defaults() {
        Ok(engine) => engine,
        Err(e) => {
            fixtures::skip("docker", &format!("no Docker client: {e}"));
            return None;
        }
    };
    match engine.ping().await {
        Ok(_) => Some(engine),
        Err(e) => {
            fixtures::skip("docker", &format!("no Docker engine answers: {e}"));
            None
        }
    }
}

/// A Redis server in the Redis image: host networking, no other network, no published port,
/// listening on the loopback port the fixture chose.
#[test]
fn containers_use_the_host_network_only() {
    run_check("containers_use_the_host_network_only", async {
        let Some(engine) = docker().await else { return };
        let (env, container) = tokio::task::spawn_blocking(|| {
            containers::start(&fixtures::REDIS, &fixtures::REDIS_CONTAINER)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the Redis image must start here: {e}"));
        let inspect = engine
            .inspect_container(container.id(), None)
            .await
            .unwrap();
        let host = inspect.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert!(host.port_bindings.unwrap_or_default().is_empty());
        let networks = inspect.network_settings.unwrap().networks.unwrap();
        assert_eq!(networks.keys().collect::<Vec<_>>(), ["host"]);
        assert_eq!(
            inspect.config.unwrap().labels.unwrap()["org.aimon.test"],
            "redis"
        );
        assert!(fixtures::port_accepts(env.port));
        let pong = tokio::task::spawn_blocking(move || {
            container.exec(vec![
                "redis-cli".to_owned(),
                "-p".to_owned(),
                env.port.to_string(),
                "ping".to_owned(),
            ])
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(pong.trim(), "PONG");
    });
}

/// An image that is not present is a reason naming it, at once: never a pull.
#[test]
fn an_absent_image_is_never_pulled() {
    run_check("an_absent_image_is_never_pulled", async {
        if docker().await.is_none() {
            return;
        }
        static ABSENT: ServerSpec = ServerSpec {
            container: Some(ContainerSpec {
                name: "absent",
                image: "127.0.0.1:5999/aimon/absent:0.0.0",
                command: None,
                env: containers::no_env,
            }),
            ..fixtures::REDIS
        };
        for image in [
            "127.0.0.1:5999/aimon/absent:0.0.0",
            "redis:0.0.0-aimon-absent",
        ] {
            let spec = ServerSpec {
                container: Some(ContainerSpec {
                    image,
                    ..ABSENT.container.unwrap()
                }),
                ..ABSENT
            };
            let started = std::time::Instant::now();
            let err = tokio::task::spawn_blocking(move || {
                containers::start(&spec, &spec.container.unwrap()).map(|_| ())
            })
            .await
            .unwrap()
            .unwrap_err();
            assert!(
                err.contains(&format!("image {image} is not present"))
                    && err.contains("never pull"),
                "{err}"
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
        // An untagged reference is refused before the engine is asked.
        let untagged = ServerSpec {
            container: Some(ContainerSpec {
                image: "redis",
                ..ABSENT.container.unwrap()
            }),
            ..ABSENT
        };
        let err = containers::start(&untagged, &untagged.container.unwrap()).unwrap_err();
        assert!(err.contains("has no tag"), "{err}");
    });
}

/// Every backend `AIMON_TEST_VIA` names is served from a container (not an environment URL or
/// a local binary), in this test binary as in the suites'.
#[test]
fn the_backends_via_containers_run_in_containers() {
    run_check("the_backends_via_containers_run_in_containers", async {
        let specs = [
            &fixtures::REDIS,
            &fixtures::POSTGRES,
            &fixtures::INFLUXDB,
            &fixtures::VICTORIA_METRICS,
        ];
        let via: Vec<_> = specs
            .into_iter()
            .filter(|spec| fixtures::via_containers(spec.backend))
            .collect();
        if via.is_empty() {
            fixtures::skip(
                "via-containers",
                "AIMON_TEST_VIA names none of redis, postgres, influxdb, victoria-metrics",
            );
            return;
        }
        for spec in via {
            let server = fixtures::resolve_server(spec)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", spec.backend));
            assert_eq!(server.source, ServerSource::Container, "{}", spec.backend);
            assert!(server.url.contains("127.0.0.1"), "{}", server.url);
        }
    });
}
