//! Native backups: the namespace's keys as Redis's own serialization (`DUMP`, the RDB value
//! format) with their remaining TTLs, restored with `RESTORE` into a staging namespace and
//! merged from there by the write rules; plus, on a standalone or Sentinel master, a snapshot
//! of the whole server (`BGSAVE`, wait on `LASTSAVE`, then the RDB file streamed over the
//! replication protocol as `redis-cli --rdb` does) — see [`RedisBackend::server_snapshot`].

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aimon_core::{BackupFormat, Error, ErrorKind, Result, TransferReport};
use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::backend::{RedisBackend, bytes, int};
use crate::config::Topology;

/// The first line of `namespace.dump`.
const MAGIC: &[u8] = b"aimon-redis-dump 1\n";
/// The namespace dump inside a native backup directory.
pub const NAMESPACE_DUMP: &str = "namespace.dump";
/// The server snapshot inside a native backup directory (standalone and Sentinel only).
pub const SERVER_RDB: &str = "server.rdb";

fn corrupt(why: &str) -> Error {
    Error::corrupted(format!("not an aimon Redis native backup: {why}"))
}

impl RedisBackend {
    /// Every key of the namespace, found through its indexes (never by scanning). Some may
    /// have expired since they were listed; callers skip those.
    pub(crate) async fn namespace_keys(&self) -> Result<Vec<String>> {
        let mut keys = vec![
            self.keys.series_index(),
            self.keys.alert_index(),
            self.keys.agent_index(),
            self.keys.registry(),
            self.keys.layout(),
        ];
        let registry: Vec<String> = self
            .pool
            .query(redis::cmd("SMEMBERS").arg(self.keys.registry()))
            .await?;
        keys.extend(registry);
        for (id, _) in self.index_members(&self.keys.series_index()).await? {
            keys.push(self.keys.series_meta(&id));
            let samples = self.keys.series_samples(&id);
            keys.extend(samples.all().map(str::to_owned));
            // Left only by a migration that was cut (see `migrate_layout`).
            keys.push(self.keys.legacy_samples(&id));
            keys.push(self.keys.legacy_values(&id));
        }
        for (id, _) in self.index_members(&self.keys.alert_index()).await? {
            keys.push(self.keys.alert(&id));
        }
        for (id, _) in self.index_members(&self.keys.agent_index()).await? {
            keys.push(self.keys.agent(&id));
        }
        Ok(keys)
    }

    pub(crate) async fn native_backup(&self, path: &Path) -> Result<TransferReport> {
        if path.exists() && std::fs::read_dir(path)?.next().is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{} exists and is not empty", path.display()),
            ));
        }
        std::fs::create_dir_all(path)?;
        let stats = self.database_stats().await?;
        let keys = self.namespace_keys().await?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path.join(NAMESPACE_DUMP))?);
        out.write_all(MAGIC)?;
        let mut bytes_written = MAGIC.len() as u64;
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("PTTL").arg(key);
                pipe.cmd("DUMP").arg(key);
            }
            let replies = self.pool.pipeline(&pipe).await?;
            for (key, pair) in chunk.iter().zip(replies.chunks(2)) {
                let [pttl, payload] = pair else { continue };
                let Some(payload) = bytes(payload) else {
                    continue; // gone (expired) since it was listed
                };
                let Some(rel) = self.keys.relative(key) else {
                    continue;
                };
                let pttl = int(pttl);
                for part in [rel.as_bytes(), payload] {
                    out.write_all(&(part.len() as u64).to_le_bytes())?;
                    out.write_all(part)?;
                }
                out.write_all(&pttl.to_le_bytes())?;
                bytes_written += 24 + rel.len() as u64 + payload.len() as u64;
            }
        }
        out.flush()?;
        if !matches!(self.config.topology, Topology::Cluster { .. }) {
            bytes_written += self.server_snapshot(&path.join(SERVER_RDB)).await?;
        }
        Ok(TransferReport {
            format: BackupFormat::Native,
            series: stats.series,
            samples: stats.samples,
            alerts: stats.alerts,
            agent_states: stats.agent_states,
            expired: 0,
            bytes: bytes_written,
        })
    }

    pub(crate) async fn native_restore(
        &self,
        store: &dyn aimon_core::StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        let file = path.join(NAMESPACE_DUMP);
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no backup at {}", path.display()),
            ));
        }
        if !path.is_dir() {
            return Err(corrupt(
                "a native Redis backup is a directory holding namespace.dump; this is a file",
            ));
        }
        let data = match std::fs::read(&file) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt("namespace.dump is missing"));
            }
            Err(e) => return Err(e.into()),
        };
        let entries = parse_dump(&data)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let staging = aimon_core::Contract::new(
            self.sibling(&format!("aimon-restore-{nanos:x}-{}", std::process::id())),
        );
        let outcome = async {
            for chunk in entries.chunks(200) {
                let mut pipe = redis::pipe();
                for (rel, payload, pttl) in chunk {
                    if !(rel.starts_with('}') || rel.starts_with('|')) {
                        return Err(corrupt("a key outside the namespace"));
                    }
                    pipe.cmd("RESTORE")
                        .arg(staging.keys.absolute(rel))
                        .arg((*pttl).max(0))
                        .arg(payload.as_slice())
                        .arg("REPLACE");
                }
                self.pool.pipeline(&pipe).await.map_err(|e| {
                    if e.kind() == ErrorKind::Backend {
                        corrupt("Redis refused a value")
                    } else {
                        e
                    }
                })?;
            }
            // A backup of a release before chunks holds samples in the old layout.
            staging.migrate_layout().await?;
            // Merge through the portable path: the same write rules, retention applied.
            let dir = std::env::temp_dir().join(format!("aimon-redis-restore-{nanos:x}"));
            let _ = std::fs::remove_dir_all(&dir);
            let merged = async {
                aimon_core::archive::write(&staging, &dir).await?;
                aimon_core::archive::restore(store, &dir).await
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            merged
        }
        .await;
        staging.drop_namespace().await?;
        let mut report = outcome?;
        report.format = BackupFormat::Native;
        Ok(report)
    }

    /// Deletes every key of this namespace (found through its indexes).
    pub(crate) async fn drop_namespace(&self) -> Result<()> {
        let keys = self.namespace_keys().await?;
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("DEL").arg(key);
            }
            self.pool.pipeline(&pipe).await?;
        }
        Ok(())
    }

    /// Writes an RDB snapshot of the whole server to `target`: `BGSAVE`, wait until `LASTSAVE`
    /// moves (at most `response_timeout`), then read the snapshot over the replication protocol
    /// (`REPLCONF rdb-only 1` + `SYNC`), as `redis-cli --rdb` does. Returns the bytes written.
    /// Not available on a Cluster (snapshot each master instead) or over TLS.
    pub async fn server_snapshot(&self, target: &Path) -> Result<u64> {
        let url = crate::conn::data_node_url(&self.config).await?;
        if url.starts_with("rediss") {
            return Err(Error::unsupported("a server snapshot over TLS"));
        }
        // LASTSAVE counts seconds, so a save finishing within the second of the previous one
        // does not move it: `rdb_saves` (INFO) tells those apart.
        let before: i64 = self.pool.query(&redis::cmd("LASTSAVE")).await?;
        let saves_before = self.rdb_saves().await?;
        let started = Instant::now();
        match self.pool.query::<Value>(&redis::cmd("BGSAVE")).await {
            Ok(_) => {}
            // A save already running will move LASTSAVE too.
            Err(e) if e.to_string().contains("in progress") => {}
            Err(e) => return Err(e),
        }
        loop {
            let now: i64 = self.pool.query(&redis::cmd("LASTSAVE")).await?;
            if now != before || self.rdb_saves().await? > saves_before {
                break;
            }
            if started.elapsed() > self.config.response_timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "BGSAVE did not finish in time",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = redis::Client::open(url.as_str()).map_err(crate::error::from_redis)?;
        let info = client.get_connection_info().clone();
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            _ => return Err(Error::unsupported("a server snapshot over this transport")),
        };
        let settings = info.redis_settings();
        let stream = tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout, "Redis did not accept in time"))??;
        let mut stream = BufReader::new(stream);
        let deadline = self.config.response_timeout;
        let written = tokio::time::timeout(deadline, async {
            // One command at a time: SYNC is refused while a reply is still pending.
            let mut commands: Vec<Vec<&str>> = Vec::new();
            if let Some(password) = settings.password() {
                match settings.username() {
                    Some(user) => commands.push(vec!["AUTH", user, password]),
                    None => commands.push(vec!["AUTH", password]),
                }
            }
            commands.push(vec!["REPLCONF", "rdb-only", "1"]);
            for command in commands {
                let mut send = Vec::new();
                resp(&mut send, &command);
                stream.get_mut().write_all(&send).await?;
                expect_ok(&mut stream).await?;
            }
            let mut send = Vec::new();
            resp(&mut send, &["SYNC"]);
            stream.get_mut().write_all(&send).await?;
            // Newlines are keep-alives until the bulk header.
            let header = loop {
                let line = read_line(&mut stream).await?;
                if !line.is_empty() {
                    break line;
                }
            };
            let Some(len) = header.strip_prefix('$') else {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("unexpected SYNC reply {header:?}"),
                ));
            };
            let mut file = tokio::fs::File::create(target).await?;
            if let Some(mark) = len.strip_prefix("EOF:") {
                // Diskless transfer: the payload ends with the 40-byte mark.
                let mark = mark.as_bytes().to_vec();
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0u64;
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            "the RDB stream ended early",
                        ));
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.ends_with(&mark) {
                        let body = tail.len() - mark.len();
                        file.write_all(&tail[..body]).await?;
                        total += body as u64;
                        break;
                    }
                    if tail.len() > mark.len() {
                        let flush = tail.len() - mark.len();
                        file.write_all(&tail[..flush]).await?;
                        total += flush as u64;
                        tail.drain(..flush);
                    }
                }
                file.flush().await?;
                Ok(total)
            } else {
                let len: u64 = len
                    .parse()
                    .map_err(|_| Error::new(ErrorKind::Backend, "bad RDB length"))?;
                let copied = tokio::io::copy(&mut (&mut stream).take(len), &mut file).await?;
                file.flush().await?;
                if copied != len {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "the RDB stream ended early",
                    ));
                }
                Ok(copied)
            }
        })
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                "the RDB transfer did not finish in time",
            )
        })??;
        let mut magic = [0u8; 5];
        std::fs::File::open(target)?.read_exact(&mut magic)?;
        if &magic != b"REDIS" {
            return Err(Error::corrupted("the snapshot is not an RDB file"));
        }
        Ok(written)
    }
}

impl RedisBackend {
    /// `rdb_saves` of `INFO stats` with no save in progress (0 while one runs).
    async fn rdb_saves(&self) -> Result<u64> {
        let info: String = self
            .pool
            .query(redis::cmd("INFO").arg("persistence").arg("stats"))
            .await?;
        if info.contains("rdb_bgsave_in_progress:1") {
            return Ok(0);
        }
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("rdb_saves:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }
}

fn resp(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "Redis closed the connection",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn expect_ok<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<()> {
    let line = read_line(r).await?;
    if line.starts_with('+') {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Backend,
            format!(
                "Redis refused the snapshot: {}",
                line.trim_start_matches('-')
            ),
        ))
    }
}

type Entry = (String, Vec<u8>, i64);

fn parse_dump(data: &[u8]) -> Result<Vec<Entry>> {
    let mut rest = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("wrong header"))?;
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn number(rest: &mut &[u8]) -> Result<[u8; 8]> {
        take(rest, 8)?.try_into().map_err(|_| corrupt("truncated"))
    }
    fn length(rest: &mut &[u8]) -> Result<usize> {
        usize::try_from(u64::from_le_bytes(number(rest)?)).map_err(|_| corrupt("length"))
    }
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let len = length(&mut rest)?;
        let key = String::from_utf8(take(&mut rest, len)?.to_vec())
            .map_err(|_| corrupt("a key is not UTF-8"))?;
        let len = length(&mut rest)?;
        let payload = take(&mut rest, len)?.to_vec();
        let pttl = i64::from_le_bytes(number(&mut rest)?);
        entries.push((key, payload, pttl));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_dumps_are_corrupted() {
        assert_eq!(
            parse_dump(b"nope").unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&5u64.to_le_bytes());
        data.extend_from_slice(b"}:a");
        assert_eq!(parse_dump(&data).unwrap_err().kind(), ErrorKind::Corrupted);
        assert!(parse_dump(MAGIC).unwrap().is_empty());
    }
}
