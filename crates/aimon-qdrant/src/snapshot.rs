//! Native backups of a Qdrant server: one collection snapshot per data kind.
//!
//! A backup asks the server for a snapshot of each collection (gRPC), downloads it from the
//! REST port (qdrant-client's own download is behind a default feature this crate leaves off:
//! it pulls a second TLS stack, and it writes an error page to the file as if it were the
//! snapshot), checks it against the server's SHA-256, deletes the server's copy and writes a
//! [`Manifest`]. A restore checks every file against the manifest, uploads each snapshot into a
//! scratch collection (`POST /collections/<scratch>/snapshots/upload`, which creates it),
//! reads every point back and drops the scratch collection; the backend then merges the points
//! with the write rules, exactly as an embedded native restore does. The live collections are
//! never replaced.
//!
//! Verified only where a Qdrant server is present (`AIMON_TEST_QDRANT_URL`, or a container):
//! this machine's CI has none. The manifest, the checksums and the REST requests' URLs are
//! unit-tested below.

use std::path::Path;
use std::time::Duration;

use aimon_core::{Error, ErrorKind, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::engine::Collection;
use crate::error::{BODY_QUOTE, transport_error};
use aimon_core::config::Secret;

pub use crate::error::status_error;

/// The manifest's file name in a server backup directory.
pub const MANIFEST: &str = "aimon-qdrant-snapshots.json";
/// The manifest's `format`.
pub const FORMAT: &str = "aimon-qdrant-server-snapshots";
/// The manifest's `version`.
pub const VERSION: u64 = 1;

/// What a server backup directory holds: one snapshot file per collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`]; [`Manifest::read`] refuses others as `Corrupted`.
    pub format: String,
    /// Always [`VERSION`]; [`Manifest::read`] refuses others as `Corrupted`.
    pub version: u64,
    /// The embedder's dimension: the alert and agent-state collections' vector size.
    pub dimension: usize,
    /// One entry per collection.
    pub collections: Vec<Entry>,
}

/// One collection's snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// [`Collection::name`].
    pub kind: String,
    /// The file's name inside the backup directory.
    pub file: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

fn corrupted(dir: &Path, problem: impl std::fmt::Display) -> Error {
    Error::corrupted(format!(
        "{} is not a usable Qdrant server backup: {problem}",
        dir.display()
    ))
}

impl Manifest {
    /// An empty manifest for a store whose embedder has `dimension`.
    pub fn new(dimension: usize) -> Self {
        Manifest {
            format: FORMAT.to_owned(),
            version: VERSION,
            dimension,
            collections: Vec::new(),
        }
    }

    /// The snapshot file name of a collection.
    pub fn file_name(collection: Collection) -> String {
        format!("{}.snapshot", collection.name())
    }

    /// Writes the manifest to `dir`/[`MANIFEST`]; `Backend` if the file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::new(ErrorKind::Backend, format!("manifest: {e}")))?;
        std::fs::write(&path, text).map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot write {}: {e}", path.display()),
            )
        })
    }

    /// Reads and checks the manifest of `dir`: format, version, the dimension this store uses,
    /// one entry per collection. Every problem is `Corrupted`, except a missing directory
    /// (`NotFound`).
    pub fn read(dir: &Path, dimension: usize) -> Result<Self> {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            // Something is there, and it is not a backup: a damaged or wrong input.
            Ok(_) => {
                return Err(Error::corrupted(format!(
                    "{} is a file, not a Qdrant native backup (a directory)",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no backup directory at {}", dir.display()),
                )
                .with_source(e));
            }
        }
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            #[cfg(feature = "qdrant-edge")]
            Err(_) if dir.join(crate::edge::BACKUP_MANIFEST).exists() => {
                return Err(corrupted(
                    dir,
                    "it is an embedded-mode (qdrant-edge://) backup; restore it into an \
                     embedded store, or move the data with a portable backup",
                ));
            }
            Err(e) => return Err(corrupted(dir, format!("no readable {MANIFEST}: {e}"))),
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| corrupted(dir, format!("bad manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(corrupted(
                dir,
                format!("format {:?}, expected {FORMAT:?}", manifest.format),
            ));
        }
        if manifest.version != VERSION {
            return Err(corrupted(
                dir,
                format!(
                    "manifest version {} (this build reads {VERSION})",
                    manifest.version
                ),
            ));
        }
        if manifest.dimension != dimension {
            return Err(corrupted(
                dir,
                format!(
                    "vectors of dimension {}, this store's embedder has {dimension}",
                    manifest.dimension
                ),
            ));
        }
        for entry in &manifest.collections {
            if !Collection::ALL.iter().any(|c| c.name() == entry.kind) {
                return Err(corrupted(
                    dir,
                    format!("unknown collection kind {:?}", entry.kind),
                ));
            }
            let plain = Path::new(&entry.file)
                .file_name()
                .is_some_and(|n| n == entry.file.as_str());
            if !plain {
                return Err(corrupted(
                    dir,
                    format!("snapshot file {:?} is not a plain file name", entry.file),
                ));
            }
        }
        for c in Collection::ALL {
            let entries = manifest
                .collections
                .iter()
                .filter(|e| e.kind == c.name())
                .count();
            if entries != 1 {
                return Err(corrupted(
                    dir,
                    format!(
                        "{entries} snapshots of the {} collection (one expected)",
                        c.name()
                    ),
                ));
            }
        }
        Ok(manifest)
    }

    /// The entry of `collection`, if the manifest has one.
    pub fn entry(&self, collection: Collection) -> Option<&Entry> {
        self.collections
            .iter()
            .find(|e| e.kind == collection.name())
    }

    /// Checks every snapshot file's size and SHA-256 against the manifest.
    pub async fn verify_files(&self, dir: &Path) -> Result<()> {
        for entry in &self.collections {
            let path = dir.join(&entry.file);
            let (bytes, sha256) = sha256_file(&path)
                .await
                .map_err(|e| corrupted(dir, format!("{}: {e}", entry.file)))?;
            if bytes != entry.bytes || sha256 != entry.sha256 {
                return Err(corrupted(
                    dir,
                    format!(
                        "{} has {bytes} bytes with SHA-256 {sha256}; the manifest says {} bytes, {}",
                        entry.file, entry.bytes, entry.sha256
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The size and lower-case hex SHA-256 of a file.
pub async fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The REST side of a Qdrant server: snapshot download and upload.
pub struct Rest {
    /// Downloads: `timeout` to connect and between reads.
    client: reqwest::Client,
    /// Uploads: the whole request, server-side recovery included, within the snapshot timeout
    /// (reqwest's read timeout runs from the moment the request is sent, so a long upload
    /// would trip it).
    uploads: reqwest::Client,
    base: url::Url,
    api_key: Option<Secret>,
    /// The per-request timeout (`timeout_ms`).
    timeout: Duration,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Rest {
    /// `base` is `http(s)://host:port`. A download may take as long as it keeps streaming
    /// (`timeout` bounds connecting and each wait for data); an upload, recovery included, may
    /// take `snapshot_timeout`.
    pub fn new(
        base: &str,
        api_key: Option<Secret>,
        timeout: Duration,
        snapshot_timeout: Duration,
    ) -> Result<Self> {
        let base = url::Url::parse(base)
            .map_err(|e| Error::config(format!("Qdrant REST endpoint {base:?}: {e}")))?;
        let client_error =
            |e: reqwest::Error| Error::new(ErrorKind::Backend, format!("HTTP client: {e}"));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(client_error)?;
        let uploads = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(snapshot_timeout)
            .build()
            .map_err(client_error)?;
        Ok(Rest {
            client,
            uploads,
            base,
            api_key,
            timeout,
        })
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .clear()
            .extend(segments);
        url
    }

    /// `GET /collections/<collection>/snapshots/<snapshot>`.
    pub fn snapshot_url(&self, collection: &str, snapshot: &str) -> url::Url {
        self.url(&["collections", collection, "snapshots", snapshot])
    }

    /// `POST /collections/<collection>/snapshots/upload?wait=true&priority=snapshot&checksum=…`.
    pub fn upload_url(&self, collection: &str, sha256: &str) -> url::Url {
        let mut url = self.url(&["collections", collection, "snapshots", "upload"]);
        url.query_pairs_mut()
            .append_pair("wait", "true")
            .append_pair("priority", "snapshot")
            .append_pair("checksum", sha256);
        url
    }

    /// `GET /telemetry?details_level=0`: the server's own figures; `result.app.startup` is when
    /// it started.
    pub fn telemetry_url(&self) -> url::Url {
        let mut url = self.url(&["telemetry"]);
        url.query_pairs_mut().append_pair("details_level", "0");
        url
    }

    /// When the server started, from its telemetry (`stats` reports the uptime). At most
    /// [`TELEMETRY_TIMEOUT`] (or the request timeout, if shorter) and [`TELEMETRY_MAX_BYTES`]
    /// of answer: `stats` must not hang on a REST port it cannot reach.
    pub async fn server_started(&self) -> Result<DateTime<Utc>> {
        let url = self.telemetry_url();
        let mut response = self
            .authorize(self.client.get(url.clone()))?
            .timeout(TELEMETRY_TIMEOUT.min(self.timeout))
            .send()
            .await
            .map_err(|e| transport_error("telemetry", &e))?;
        check_status(&url, response.status(), &mut response).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error("telemetry", &e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > TELEMETRY_MAX_BYTES {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!(
                        "qdrant REST {}: answer over {TELEMETRY_MAX_BYTES} bytes",
                        url.path()
                    ),
                ));
            }
        }
        telemetry_startup(&body).ok_or_else(|| {
            Error::new(
                ErrorKind::Backend,
                format!(
                    "qdrant REST {}: no result.app.startup in the answer (a server before 1.9 \
                     does not report it)",
                    url.path()
                ),
            )
        })
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        let Some(key) = &self.api_key else {
            return Ok(request);
        };
        let mut value = reqwest::header::HeaderValue::from_str(key.expose())
            .map_err(|_| Error::config("the Qdrant API key is not a valid HTTP header value"))?;
        // Kept out of any `Debug` of the request.
        value.set_sensitive(true);
        Ok(request.header("api-key", value))
    }

    /// Streams a snapshot into the new file `to`; returns its size and SHA-256.
    pub async fn download(
        &self,
        collection: &str,
        snapshot: &str,
        to: &Path,
    ) -> Result<(u64, String)> {
        let url = self.snapshot_url(collection, snapshot);
        let mut response = self
            .authorize(self.client.get(url.clone()))?
            .send()
            .await
            .map_err(|e| transport_error("download", &e))?;
        check_status(&url, response.status(), &mut response).await?;
        let io = |e: std::io::Error| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot write {}: {e}", to.display()),
            )
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .await
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error("download", &e))?
        {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok((bytes, hex(&hasher.finalize())))
    }

    /// Uploads the snapshot file `from` as the collection `collection` (created by the upload).
    pub async fn upload(&self, collection: &str, from: &Path, sha256: &str) -> Result<()> {
        let url = self.upload_url(collection, sha256);
        let file = tokio::fs::File::open(from)
            .await
            .map_err(|e| Error::corrupted(format!("cannot read {}: {e}", from.display())))?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
        let part = reqwest::multipart::Part::stream_with_length(file, len)
            .file_name("snapshot.snapshot")
            .mime_str("application/octet-stream")
            .map_err(|e| transport_error("upload", &e))?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);
        let mut response = self
            .authorize(self.uploads.post(url.clone()))?
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport_error("upload", &e))?;
        check_status(&url, response.status(), &mut response).await
    }
}

/// How long `stats` waits for the telemetry answer.
pub const TELEMETRY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a telemetry answer `stats` reads (at `details_level=0` it is a few KiB).
pub const TELEMETRY_MAX_BYTES: usize = 4 * 1024 * 1024;

/// `result.app.startup` of a `GET /telemetry` answer: when the server started.
pub fn telemetry_startup(body: &[u8]) -> Option<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value.pointer("/result/app/startup")?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn check_status(
    url: &url::Url,
    status: reqwest::StatusCode,
    response: &mut reqwest::Response,
) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let mut body = Vec::new();
    while body.len() < BODY_QUOTE {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Err(status_error(url, status, &body))
}

/// How old a scratch collection must be before a later restore drops it as left over (a
/// restore that was killed, or whose drop failed).
pub const SCRATCH_MAX_AGE_SECS: u64 = 24 * 3600;

/// A scratch collection name for restoring `collection` from a backup:
/// `<prefix>_restore_<unix seconds>_<6 hex>_<kind>`, unique per restore.
pub fn scratch_name(
    prefix: &str,
    started_secs: u64,
    restore_id: &uuid::Uuid,
    collection: Collection,
) -> String {
    let id = restore_id.simple().to_string();
    format!(
        "{prefix}_restore_{started_secs}_{}_{}",
        &id[..6],
        collection.name()
    )
}

/// When the scratch collection `name` of `prefix` was made (unix seconds); `None` for any name
/// [`scratch_name`] did not make, so nothing else is ever taken for one.
pub fn scratch_started(prefix: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix("_restore_")?;
    let (secs, rest) = rest.split_once('_')?;
    let (id, kind) = rest.split_once('_')?;
    let is_hex = id.len() == 6 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let known = Collection::ALL.iter().any(|c| c.name() == kind);
    if !(is_hex && known && !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    secs.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain file where a backup directory should be is damaged input, not a missing one.
    #[test]
    fn a_file_is_corrupted_and_a_missing_path_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("garbage.bin");
        std::fs::write(&file, [0x5a; 4096]).unwrap();
        let err = Manifest::read(&file, 384).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        let err = Manifest::read(&dir.path().join("nothing"), 384).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    fn manifest(dir: &Path) -> Manifest {
        let mut m = Manifest::new(384);
        for c in Collection::ALL {
            let file = Manifest::file_name(c);
            std::fs::write(dir.join(&file), c.name()).unwrap();
            m.collections.push(Entry {
                kind: c.name().to_owned(),
                file,
                bytes: c.name().len() as u64,
                sha256: hex(&Sha256::digest(c.name().as_bytes())),
            });
        }
        m
    }

    #[tokio::test]
    async fn a_manifest_round_trips_and_checks_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path());
        m.write(dir.path()).unwrap();
        let back = Manifest::read(dir.path(), 384).unwrap();
        assert_eq!(back, m);
        back.verify_files(dir.path()).await.unwrap();
        assert_eq!(
            back.entry(Collection::Alerts).unwrap().file,
            "alerts.snapshot"
        );

        // A changed byte, a missing file: Corrupted, naming the file.
        std::fs::write(dir.path().join("alerts.snapshot"), "alertS").unwrap();
        let err = back.verify_files(dir.path()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert!(err.to_string().contains("alerts.snapshot"), "{err}");
        std::fs::remove_file(dir.path().join("series.snapshot")).unwrap();
        let err = back.verify_files(dir.path()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
    }

    #[test]
    fn bad_manifests_are_corrupted_and_a_missing_directory_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let kind = |dir: &Path| Manifest::read(dir, 384).unwrap_err().kind();
        assert_eq!(kind(&dir.path().join("nope")), ErrorKind::NotFound);
        assert_eq!(kind(dir.path()), ErrorKind::Corrupted);

        let good = manifest(dir.path());
        let cases: [fn(&mut Manifest); 7] = [
            |m| m.format = "other".into(),
            |m| m.version = 99,
            |m| m.dimension = 3,
            |m| {
                m.collections.pop();
            },
            |m| m.collections[0].file = "../../etc/passwd".into(),
            |m| {
                let mut extra = m.collections[0].clone();
                extra.file = "/etc/shadow".into();
                m.collections.push(extra);
            },
            |m| {
                let mut extra = m.collections[0].clone();
                extra.kind = "other".into();
                m.collections.push(extra);
            },
        ];
        for change in cases {
            let mut m = good.clone();
            change(&mut m);
            m.write(dir.path()).unwrap();
            assert_eq!(kind(dir.path()), ErrorKind::Corrupted, "{m:?}");
        }
        std::fs::write(dir.path().join(MANIFEST), "{not json").unwrap();
        assert_eq!(kind(dir.path()), ErrorKind::Corrupted);
    }

    #[test]
    fn rest_urls_encode_names_and_carry_the_checksum() {
        let rest = Rest::new(
            "https://db:6333",
            Some(Secret::new("s3cret")),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            rest.snapshot_url("aimon_alerts", "aimon_alerts-1-2026-11-27.snapshot")
                .as_str(),
            "https://db:6333/collections/aimon_alerts/snapshots/aimon_alerts-1-2026-11-27.snapshot"
        );
        // A name the server made up is one path segment, whatever it holds.
        assert_eq!(
            rest.snapshot_url("c", "a/b?c#d").as_str(),
            "https://db:6333/collections/c/snapshots/a%2Fb%3Fc%23d"
        );
        assert_eq!(
            rest.upload_url("ns_restore_0123456789ab_alerts", "abc")
                .as_str(),
            "https://db:6333/collections/ns_restore_0123456789ab_alerts/snapshots/upload?wait=true&priority=snapshot&checksum=abc"
        );
        let text = format!("{rest:?}");
        assert!(!text.contains("s3cret") && text.contains("***"), "{text}");
    }

    #[test]
    fn the_telemetry_url_asks_for_the_least_detail() {
        let rest = Rest::new(
            "http://db:6333",
            None,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            rest.telemetry_url().as_str(),
            "http://db:6333/telemetry?details_level=0"
        );
    }

    #[test]
    fn the_server_start_comes_from_telemetry_app_startup() {
        // The shape of Qdrant's `GET /telemetry` answer (1.9 and later), trimmed.
        let body = br#"{"result":{"id":"5f1c","app":{"name":"qdrant","version":"1.19.0",
            "features":{"debug":false},"jwt_rbac":false,"startup":"2026-03-01T10:20:30.45Z"},
            "collections":{"number_of_collections":4}},"status":"ok","time":0.0012}"#;
        let started = telemetry_startup(body).unwrap();
        assert_eq!(started.to_rfc3339(), "2026-03-01T10:20:30.450+00:00");
        // An offset is read as the instant it names.
        let body = br#"{"result":{"app":{"startup":"2026-03-01T12:20:30+02:00"}}}"#;
        assert_eq!(
            telemetry_startup(body).unwrap().to_rfc3339(),
            "2026-03-01T10:20:30+00:00"
        );
        for unknown in [
            &br#"{"result":{"app":{"name":"qdrant","version":"1.8.0"}}}"#[..],
            br#"{"result":{"app":{"startup":"yesterday"}}}"#,
            br#"{"result":{"app":{"startup":1700000000}}}"#,
            br#"{"status":{"error":"Forbidden: Global access is required"}}"#,
            b"<html>not json</html>",
            b"",
        ] {
            assert_eq!(
                telemetry_startup(unknown),
                None,
                "{}",
                String::from_utf8_lossy(unknown)
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_rest_port_is_a_quick_unavailable() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rest = Rest::new(
            &format!("http://127.0.0.1:{port}"),
            Some(Secret::new("s3cret")),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = rest.server_started().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(
            started.elapsed() <= TELEMETRY_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn scratch_collections_are_unique_valid_names_that_tell_their_age() {
        let secs = 1_780_000_000;
        let a = scratch_name("ns", secs, &uuid::Uuid::new_v4(), Collection::AgentStates);
        let b = scratch_name("ns", secs, &uuid::Uuid::new_v4(), Collection::AgentStates);
        assert_ne!(a, b);
        assert!(
            a.starts_with("ns_restore_1780000000_") && a.ends_with("_agent_states"),
            "{a}"
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert!(a.len() < 255);
        assert_eq!(scratch_started("ns", &a), Some(secs));
        // Only names a restore made are taken for scratch collections.
        for other in [
            "ns_alerts",
            "ns_restore_alerts",
            "ns_restore_12_abcdef",
            "ns_restore_12_abcdeg_alerts",
            "ns_restore_x1_abcdef_alerts",
            "ns_restore_12_abcdef_other",
            "ns2_restore_12_abcdef_alerts",
        ] {
            assert_eq!(scratch_started("ns", other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn sha256_of_a_file_is_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (bytes, sum) = sha256_file(&path).await.unwrap();
        assert_eq!(bytes, 3);
        assert_eq!(
            sum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
