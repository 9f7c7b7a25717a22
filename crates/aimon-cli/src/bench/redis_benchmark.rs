//! The `--compare-redis-benchmark` baseline: `redis-benchmark` running one ZADD per sample
//! against the store's server.

use super::{ToolRun, store_config};
use crate::cli::Global;
use crate::config::Storage;
use crate::error::{CliError, Result};

/// Where `redis-benchmark` connects: the server of a `redis://` store, and the store's
/// namespace (the baseline key lives there). `Debug` hides the password.
pub(super) struct RedisTarget {
    host: String,
    port: u16,
    db: i64,
    password: Option<String>,
    namespace: String,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

pub(super) fn redis_target(
    storage: &Storage,
    global: &Global,
    backend: &std::sync::Arc<dyn aimon::StorageBackend>,
) -> Result<RedisTarget> {
    let refuse = |why: &str| {
        CliError::new(format!(
            "--compare-redis-benchmark needs a redis:// store{why}; {} is {}",
            backend.name(),
            backend.backend_type()
        ))
    };
    if backend.backend_type() != aimon::StorageBackendType::Redis {
        return Err(refuse(""));
    }
    let config = store_config(storage, global, backend.name())?
        .ok_or_else(|| refuse(" given by --storage or --config"))?;
    let redis = aimon::redis::RedisConfig::from_storage_config(&config)?;
    let aimon::redis::Topology::Standalone { url } = &redis.topology else {
        return Err(refuse(" (one server; not Sentinel or Cluster)"));
    };
    parse_redis_url(url, redis.namespace.clone()).ok_or_else(|| refuse(" (not TLS)"))
}

/// `redis://[user:password@]host[:port][/db]` into its parts (the password percent-decoded);
/// `None` for anything else (`rediss://`, an ACL user other than `default`).
fn parse_redis_url(url: &str, namespace: String) -> Option<RedisTarget> {
    let url = url::Url::parse(url).ok()?;
    if url.scheme() != "redis" || !(url.username().is_empty() || url.username() == "default") {
        return None;
    }
    let password = match url.password() {
        Some(p) => Some(
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .ok()?
                .into_owned(),
        ),
        None => None,
    }
    .filter(|p| !p.is_empty());
    let host = match url.host()? {
        url::Host::Ipv6(ip) => ip.to_string(),
        host => host.to_string(),
    };
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db.parse().ok()?,
    };
    Some(RedisTarget {
        host,
        port: url.port().unwrap_or(6379),
        db,
        password,
        namespace,
    })
}

/// `redis-benchmark` or `redis-cli` aimed at the target: host, port and database on the
/// command line, the password only in `REDISCLI_AUTH`.
fn redis_tool(tool: &str, target: &RedisTarget) -> std::process::Command {
    let mut cmd = std::process::Command::new(tool);
    cmd.arg("-h")
        .arg(&target.host)
        .arg("-p")
        .arg(target.port.to_string())
        .env_remove("REDISCLI_AUTH")
        .stdin(std::process::Stdio::null());
    if target.db != 0 {
        cmd.arg(if tool == "redis-cli" { "-n" } else { "--dbnum" })
            .arg(target.db.to_string());
    }
    if let Some(password) = &target.password {
        cmd.env("REDISCLI_AUTH", password);
    }
    cmd
}

/// Runs `redis-benchmark -P 64 -n N -r N -q ZADD KEY __rand_int__ __rand_int__` against the
/// store's server: `N` ZADDs, the one command aimon's layout needs per sample, on a key in the
/// store's namespace that is deleted afterwards. Compares its requests/s with aimon's samples/s.
pub(super) async fn redis_benchmark_baseline(
    target: &RedisTarget,
    run: &str,
    samples: u64,
) -> Result<ToolRun> {
    let tool_error = |tool: &str, e: std::io::Error| {
        CliError::new(format!(
            "cannot run {tool} for --compare-redis-benchmark: {e}"
        ))
    };
    let version = std::process::Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .map_err(|e| tool_error("redis-benchmark", e))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let tool = format!(
        "redis-benchmark {}",
        version.split_whitespace().nth(1).unwrap_or("?")
    );
    let key =
        aimon::redis::namespace_key(&target.namespace, &format!("bench:redis-benchmark:{run}"));
    let n = samples.to_string();
    let args = [
        "-P",
        "64",
        "-n",
        &n,
        "-r",
        &n,
        "-q",
        "ZADD",
        &key,
        "__rand_int__",
        "__rand_int__",
    ];
    let out = redis_tool("redis-benchmark", target)
        .args(args)
        .output()
        .map_err(|e| tool_error("redis-benchmark", e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The key's memory over its members (`-r` draws members at random, so fewer than `samples`
    // are distinct), measured as aimon's Redis backend measures its keys.
    let bytes_per_sample = redis_cli_integer(target, &["MEMORY", "USAGE", &key, "SAMPLES", "0"])
        .zip(redis_cli_integer(target, &["ZCARD", &key]).filter(|n| *n > 0))
        .map(|(bytes, members)| bytes as f64 / members as f64);
    // Whatever happens, the baseline key goes.
    let cleanup = redis_tool("redis-cli", target)
        .arg("DEL")
        .arg(&key)
        .output();
    if text.contains("NOAUTH") || text.contains("WRONGPASS") {
        return Err(CliError::new(
            "redis-benchmark did not authenticate: it got the password only through \
             REDISCLI_AUTH (aimon never puts it on a command line), which this redis-benchmark \
             does not read",
        ));
    }
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|line| {
            let before = line.split(" requests per second").next()?;
            if before.len() == line.len() {
                return None;
            }
            before.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .next_back();
    let Some(rate) = rate.filter(|r| *r > 0.0 && out.status.success()) else {
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(CliError::new(format!(
            "redis-benchmark gave no requests/s ({}): {}",
            out.status,
            last.trim()
        )));
    };
    match cleanup {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(CliError::new(format!(
                "redis-cli DEL of the baseline key {key} failed: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            )));
        }
        Err(e) => return Err(tool_error("redis-cli", e)),
    }
    Ok(ToolRun {
        tool,
        command: format!(
            "redis-benchmark -h {} -p {} {}",
            target.host,
            target.port,
            args.join(" ")
        ),
        seconds: samples as f64 / rate,
        samples_per_second: rate,
        bytes_per_sample,
    })
}

/// The integer `redis-cli` prints for `args`; `None` for anything else (an error, a missing
/// key, no `redis-cli`).
fn redis_cli_integer(target: &RedisTarget, args: &[&str]) -> Option<u64> {
    let out = redis_tool("redis-cli", target).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_split_without_showing_the_password() {
        let t = parse_redis_url("redis://:p%40ss@10.0.0.1:6380/2", "ns".into()).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("10.0.0.1", 6380, 2));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(!format!("{t:?}").contains("p@ss"));
        let t = parse_redis_url("redis://default:x@[::1]", "ns".into()).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6379, 0));
        assert!(parse_redis_url("rediss://h:1", "ns".into()).is_none());
        assert!(parse_redis_url("redis://alice:x@h:1", "ns".into()).is_none());
        let t = parse_redis_url("redis://127.0.0.1:6379", "ns".into()).unwrap();
        assert_eq!(t.password, None);
    }
}
