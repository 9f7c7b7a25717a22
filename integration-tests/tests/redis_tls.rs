//! `rediss://` against a real `redis-server` listening only on TLS, with a CA and a server
//! certificate made for the test by the `openssl` command line. The backend trusts the CA
//! through `tls_ca_file`; without it the system's roots do not know the CA and connecting fails
//! with a clear error. A server that requires client certificates is served with
//! `tls_cert_file` + `tls_key_file`.
#![cfg(feature = "redis")]

use aimon_core::Contract;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aimon_core::{ErrorKind, StorageBackend, StorageConfig};
use aimon_integration_tests::conformance::support::*;
use aimon_integration_tests::fixtures::{self, run_check};
use aimon_redis::RedisBackend;

/// A TLS-only `redis-server`, killed and waited on when dropped.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server and a client certificate it signed (P-256 keys, valid two days).
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=aimon-test-ca",
    ]);
    openssl(dir, &ca);
    for (name, usage, san) in [
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ] {
        let ext = format!(
            "{san}basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req", "-new"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn start_tls_server(binary: &Path, dir: &Path, require_client_cert: bool) -> TlsServer {
    let port = fixtures::free_port().unwrap();
    let child = Command::new(binary)
        .current_dir(dir)
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt"])
        .args([
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = TlsServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fixtures::port_accepts(port) {
        assert!(
            Instant::now() < deadline,
            "the TLS redis-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn config(server: &TlsServer, dir: &Path, options: &[(&str, &str)]) -> StorageConfig {
    let mut config =
        StorageConfig::from_url("tls", format!("rediss://127.0.0.1:{}/0", server.port))
            .unwrap()
            .option("namespace", fixtures::unique_namespace("redistls"))
            .option("connect_timeout_ms", 2_000);
    for (key, file) in options {
        config = config.option(*key, dir.join(file).to_str().unwrap());
    }
    config
}

/// The binaries this check needs, or a skip (a failure when `AIMON_REQUIRE` names redis).
fn binaries() -> Option<std::path::PathBuf> {
    let binary = fixtures::find_binary("redis-server");
    if binary.is_none() || fixtures::find_binary("openssl").is_none() {
        fixtures::skip(
            "redis",
            "no redis-server or openssl binary for the TLS check",
        );
        return None;
    }
    binary
}

#[test]
fn rediss_with_the_configured_ca_works_and_an_unknown_ca_is_refused() {
    run_check("rediss", async {
        let Some(binary) = binaries() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || {
            make_certificates(&path);
            start_tls_server(&binary, &path, false)
        })
        .await
        .unwrap();

        let store = Contract::new(
            RedisBackend::connect(&config(&server, dir.path(), &[("tls_ca_file", "ca.crt")]))
                .await
                .expect("connects over TLS trusting the test CA"),
        );
        let metric = series("tls/latency", "llm.latency")
            .with_value(sample(1, 1.5))
            .with_value(sample(2, 2.5));
        assert_eq!(store.save_metrics(&[metric]).await.unwrap().written, 2);
        let back = store.get_metric("tls/latency").await.unwrap().unwrap();
        assert_eq!(back.values.len(), 2);
        assert_eq!(store.stats().await.unwrap().samples, 2);

        // Without the CA the server's certificate is not trusted: a clear error, soon.
        let started = Instant::now();
        let err = match RedisBackend::connect(&config(&server, dir.path(), &[])).await {
            Ok(_) => panic!("an unknown CA must not be trusted"),
            Err(e) => e,
        };
        assert!(started.elapsed() < Duration::from_secs(15), "{err}");
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err:?}"
        );
    });
}

#[test]
fn rediss_with_a_client_certificate() {
    run_check("rediss mTLS", async {
        let Some(binary) = binaries() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || {
            make_certificates(&path);
            start_tls_server(&binary, &path, true)
        })
        .await
        .unwrap();
        let with_cert = config(
            &server,
            dir.path(),
            &[
                ("tls_ca_file", "ca.crt"),
                ("tls_cert_file", "client.crt"),
                ("tls_key_file", "client.key"),
            ],
        );
        let store = Contract::new(
            RedisBackend::connect(&with_cert)
                .await
                .expect("connects with the client certificate"),
        );
        store
            .save_metric(&series("mtls/x", "x").with_value(sample(1, 1.0)))
            .await
            .unwrap();
        assert!(store.get_metric("mtls/x").await.unwrap().is_some());
        // The server asks for a certificate: without one nothing gets through.
        let without = config(&server, dir.path(), &[("tls_ca_file", "ca.crt")]);
        let refused = match RedisBackend::connect(&without).await {
            Err(_) => true,
            Ok(store) => Contract::new(store).get_metric("mtls/x").await.is_err(),
        };
        assert!(refused, "a client without a certificate was served");
    });
}
