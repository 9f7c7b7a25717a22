//! The HTTP client: `/ping`, `/query` (InfluxQL) and the two write APIs, one client for every
//! API generation ([`ApiSettings`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use aimon_core::{Error, ErrorKind, Result};
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use serde::Deserialize;

use crate::config::{ApiSettings, InfluxConfig};
use crate::error::{from_query_error, from_reqwest, from_status};
use crate::line;

/// Where a write goes: the samples' retention policy (bucket), or the metadata's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Samples,
    Meta,
}

/// What `/ping` says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `X-Influxdb-Version` (`1.6.7~rc0`, `2.7.1`, `v3.0.0`…), or `unknown`.
    pub version: String,
    /// `X-Influxdb-Build` (`OSS`, `ENT`…), if sent.
    pub build: Option<String>,
}

impl ServerInfo {
    /// The major version the header names, if it parses.
    pub fn major(&self) -> Option<u32> {
        self.version
            .trim_start_matches(['v', 'V'])
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
    }
}

/// One series of a `/query` answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Series {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

impl Series {
    /// The index of a column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// A tag's value, decoded; `None` when absent (InfluxDB reports a missing tag as "").
    pub fn tag(&self, key: &str) -> Option<String> {
        self.tags
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| line::decode_tag_text(v).into_owned())
    }
}

#[derive(Debug, Default, Deserialize)]
struct StatementChunk {
    #[serde(default)]
    statement_id: usize,
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct QueryChunk {
    #[serde(default)]
    results: Vec<StatementChunk>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Rows per chunk of a chunked `/query` answer: servers with a `max-row-limit` cap each chunk,
/// not the whole answer.
const CHUNK_SIZE: &str = "10000";

/// The HTTP client of one store.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    config: Arc<InfluxConfig>,
}

impl Client {
    pub fn new(config: Arc<InfluxConfig>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)))
            .pool_max_idle_per_host(16)
            .user_agent(concat!("aimon-influxdb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot build the HTTP client").with_source(e))?;
        Ok(Client { http, config })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        self.config
            .base_url
            .join(path)
            .unwrap_or_else(|_| self.config.base_url.clone())
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api {
            ApiSettings::V1 {
                username: Some(user),
                password,
                ..
            } => request.basic_auth(user, password.as_ref().map(|p| p.expose())),
            ApiSettings::V1 { .. } => request,
            ApiSettings::V2 { token, .. } => {
                // Marked sensitive so that no `Debug` of the request or header map shows it.
                match reqwest::header::HeaderValue::from_str(&format!("Token {}", token.expose())) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        request.header(reqwest::header::AUTHORIZATION, value)
                    }
                    // Unreachable: the configuration admits visible ASCII tokens only. Sent
                    // without it, the server answers 401 (`ConfigInvalid`).
                    Err(_) => request,
                }
            }
        }
    }

    /// `GET /ping`: the server's version from its headers.
    pub async fn ping(&self) -> Result<ServerInfo> {
        let response = self
            .authorize(self.http.get(self.url("ping")))
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let info = ServerInfo {
            version: header("X-Influxdb-Version").unwrap_or_else(|| "unknown".to_owned()),
            build: header("X-Influxdb-Build"),
        };
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(from_status(status.as_u16(), &error_message(&body)));
        }
        Ok(info)
    }

    /// Runs InfluxQL statements (`;`-separated) against the store's database and returns the
    /// series of each statement; any statement's error fails the call.
    pub async fn query(&self, q: &str) -> Result<Vec<Vec<Series>>> {
        self.query_finite(q)
            .await?
            .ok_or_else(|| Error::malformed("query answer: a value JSON cannot carry (±Inf, NaN)"))
    }

    /// [`Client::query`], but `None` where an answer held ±Inf or NaN: InfluxDB's JSON encoder
    /// cannot write those and sends its error text (`json: unsupported value: +Inf`) in place
    /// of the answer, so a float sum that overflowed fails every column of its statement.
    pub async fn query_finite(&self, q: &str) -> Result<Option<Vec<Vec<Series>>>> {
        let statements = q.split(';').filter(|s| !s.trim().is_empty()).count().max(1);
        let mut form = vec![
            ("q", q),
            ("epoch", "u"),
            ("chunked", "true"),
            ("chunk_size", CHUNK_SIZE),
        ];
        let db = self.config.api.database();
        form.push(("db", db));
        tracing::trace!(backend = %self.config.name, query = q, "influxql");
        let response = self
            .authorize(self.http.post(self.url("query")))
            .form(&form)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        let body = response.bytes().await.map_err(from_reqwest)?;
        if !status.is_success() {
            return Err(from_status(
                status.as_u16(),
                &error_message(&String::from_utf8_lossy(&body)),
            ));
        }
        let mut out: Vec<Vec<Series>> = vec![Vec::new(); statements];
        for chunk in serde_json::Deserializer::from_slice(&body).into_iter::<QueryChunk>() {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(_) if String::from_utf8_lossy(&body).contains("unsupported value: ") => {
                    return Ok(None);
                }
                Err(e) => return Err(Error::malformed("query answer").with_source(e)),
            };
            if let Some(error) = chunk.error {
                return Err(from_query_error(&error));
            }
            for result in chunk.results {
                if let Some(error) = result.error {
                    return Err(from_query_error(&error));
                }
                // `statements` counts `;`-separated parts: an upper bound (a `;` inside a
                // string literal splits one statement in two). An id past it is not an
                // answer to this request; the server's number never sizes an allocation.
                let Some(target) = out.get_mut(result.statement_id) else {
                    return Err(Error::malformed(
                        "query answer: a statement id past the request's",
                    ));
                };
                for series in result.series {
                    // A series continued from the previous chunk: same name and tags.
                    match target.last_mut() {
                        Some(last) if last.name == series.name && last.tags == series.tags => {
                            last.values.extend(series.values)
                        }
                        _ => target.push(series),
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Runs one statement and returns its series.
    pub async fn query_one(&self, q: &str) -> Result<Vec<Series>> {
        Ok(self.query(q).await?.into_iter().next().unwrap_or_default())
    }

    /// Writes line-protocol `body` (already one batch) to `target`, gzip-compressed.
    pub async fn write(&self, target: Target, body: &[u8]) -> Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        let mut url = match &self.config.api {
            ApiSettings::V1 { .. } => self.url("write"),
            ApiSettings::V2 { .. } => self.url("api/v2/write"),
        };
        {
            let mut pairs = url.query_pairs_mut();
            match &self.config.api {
                ApiSettings::V1 {
                    database,
                    retention_policy,
                    meta_retention_policy,
                    ..
                } => {
                    pairs.append_pair("db", database);
                    pairs.append_pair(
                        "rp",
                        match target {
                            Target::Samples => retention_policy,
                            Target::Meta => meta_retention_policy,
                        },
                    );
                    pairs.append_pair("precision", "u");
                }
                ApiSettings::V2 {
                    org,
                    bucket,
                    meta_bucket,
                    ..
                } => {
                    pairs.append_pair("org", org);
                    pairs.append_pair(
                        "bucket",
                        match target {
                            Target::Samples => bucket,
                            Target::Meta => meta_bucket,
                        },
                    );
                    pairs.append_pair("precision", "us");
                }
            }
        }
        let compressed = gzip(body)?;
        let response = self
            .authorize(self.http.post(url))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(compressed)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(from_status(status.as_u16(), &error_message(&text)))
    }

    /// Writes `lines` (each ending in `\n`) in batches of at most `batch_lines` lines and
    /// `batch_bytes` bytes, in order. Points are idempotent (a rewritten key overwrites), so a
    /// batch that failed may be sent again whole.
    pub async fn write_lines(&self, target: Target, lines: &LineBuffer) -> Result<()> {
        for batch in lines.batches(self.config.batch_lines, self.config.batch_bytes) {
            self.write(target, batch).await?;
        }
        Ok(())
    }
}

/// Lines being built, with their boundaries, so they can be cut into batches.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    pub text: String,
    /// End offsets of every line.
    pub ends: Vec<usize>,
}

impl LineBuffer {
    /// Marks the end of the line just appended to `text` (adds the newline).
    pub fn end_line(&mut self) {
        self.text.push('\n');
        self.ends.push(self.text.len());
    }

    /// Byte slices of at most `max_lines` whole lines and (unless one line alone is longer)
    /// `max_bytes` bytes.
    pub fn batches(&self, max_lines: usize, max_bytes: usize) -> Vec<&[u8]> {
        let bytes = self.text.as_bytes();
        let mut out = Vec::new();
        let mut start = 0;
        let mut count = 0;
        let mut last_end = 0;
        for &end in &self.ends {
            if count > 0 && (count >= max_lines || end - start > max_bytes) {
                out.push(&bytes[start..last_end]);
                start = last_end;
                count = 0;
            }
            count += 1;
            last_end = end;
        }
        if count > 0 {
            out.push(&bytes[start..last_end]);
        }
        out
    }
}

thread_local! {
    /// This thread's deflate stream, reset for every request body: a new one allocates and
    /// clears some hundreds of KiB of window and hash tables, 5% of a bench batch's CPU.
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// The gzip member of `body` (what `GzEncoder` with `Compression::fast()` writes, with the
/// same header), compressed in one call into one buffer.
pub(crate) fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: flate2::CompressError| {
        Error::new(ErrorKind::Backend, "cannot compress a write").with_source(e)
    };
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    // RFC 1952: magic, deflate, no flags, no mtime, XFL 4 (fastest), OS 255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    DEFLATE.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let deflate = slot.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        deflate.reset();
        let start = deflate.total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            let consumed = (deflate.total_in() - start) as usize;
            let status = deflate
                .compress_vec(&body[consumed..], &mut out, FlushCompress::Finish)
                .map_err(failed)?;
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Ok(out)
}

/// InfluxDB's message from an error body (`{"error": "…"}` on 1.x, `{"message": "…"}` on 2.x).
fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error: Some(e), .. }) => e,
        Ok(ErrorBody {
            message: Some(m), ..
        }) => m,
        _ => body.to_owned(),
    }
}

/// A JSON cell as `i64` (times with `epoch=u`, counts).
pub(crate) fn cell_i64(value: &serde_json::Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f as i64)
    })
}

/// A JSON cell as `f64`.
pub(crate) fn cell_f64(value: &serde_json::Value) -> Option<f64> {
    value.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_lines_and_bytes() {
        let mut buf = LineBuffer::default();
        for i in 0..10 {
            buf.text.push_str(&format!("m v={i}"));
            buf.end_line();
        }
        let by_lines = buf.batches(4, usize::MAX);
        assert_eq!(by_lines.len(), 3);
        assert_eq!(by_lines[0], b"m v=0\nm v=1\nm v=2\nm v=3\n");
        let by_bytes = buf.batches(100, 13);
        assert!(by_bytes.iter().all(|b| b.len() <= 13), "{by_bytes:?}");
        assert_eq!(by_bytes.concat(), buf.text.as_bytes());
        assert_eq!(buf.batches(1, 1).len(), 10, "an oversized line goes alone");
    }

    /// The gzip of a request body decodes to the body, for empty, small and large bodies, on
    /// a reused stream, and starts with the header `GzEncoder` writes.
    #[test]
    fn gzip_round_trips_on_a_reused_stream() {
        use std::io::Read as _;
        let large: String = (0..20_000)
            .map(|i| {
                format!(
                    "samples,sid=s{} v={}.5 {}\n",
                    i % 100,
                    i % 97,
                    1_700_000_000 + i
                )
            })
            .collect();
        for body in [&b""[..], b"m v=1 0\n", large.as_bytes(), b"m v=2 0\n"] {
            let gz = gzip(body).expect("gzip");
            let reference = {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
                std::io::Write::write_all(&mut e, body).expect("write");
                e.finish().expect("finish")
            };
            assert_eq!(gz[..10], reference[..10]);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .expect("valid gzip");
            assert_eq!(decoded, body);
        }
    }

    #[test]
    fn versions_parse() {
        let info = |v: &str| ServerInfo {
            version: v.to_owned(),
            build: None,
        };
        assert_eq!(info("1.6.7~rc0").major(), Some(1));
        assert_eq!(info("v2.7.1").major(), Some(2));
        assert_eq!(info("3.0.0").major(), Some(3));
        assert_eq!(info("unknown").major(), None);
    }
}
