//! A generated, labelled set of alerts for measuring similarity quality (issue 6, item 5), and
//! the measure: precision@k within the family.
//!
//! [`labelled_alerts`] builds [`FAMILIES`]` × per_family` alerts, each family one root cause
//! (GPU out of memory, LLM rate limit, tool-call timeout…) written with varied names, wording,
//! synonyms, label values, sources and statuses, from a seeded generator: the same seed gives
//! the same set on every platform. [`precision_at_k`] asks a backend, for every alert, the `k`
//! alerts most like it (item target, which excludes the alert itself) and averages the share of
//! them in the same family; it also returns every ranking so backends can be compared exactly.
//!
//! ```ignore
//! let set = labelled_alerts(42, 20);
//! store.save_alerts(&set.iter().map(|l| l.alert.clone()).collect::<Vec<_>>()).await?;
//! let report = precision_at_k(&store, &set, 5).await?;
//! assert!(report.precision >= 0.8);
//! ```

use std::collections::BTreeMap;

use aimon_core::similarity::SimilarAlertsQuery;
use aimon_core::{Alert, AlertSeverity, AlertStatus, Result, StorageBackend};
use chrono::{TimeDelta, TimeZone, Utc};

/// An alert and the root cause it was generated from.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledAlert {
    pub family: &'static str,
    pub alert: Alert,
}

/// One root cause: how operators and tools name it, describe it, and label it.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub titles: &'static [&'static str],
    /// Descriptions with `{a}`, `{b}`, `{n}` slots filled from `a_values`, `b_values` and a number.
    pub descriptions: &'static [&'static str],
    pub a_values: &'static [&'static str],
    pub b_values: &'static [&'static str],
    /// The label key that carries `a` (for example `gpu`, `provider`, `tool`).
    pub a_label: &'static str,
}

/// The families of the set: ten-plus distinct root causes of AI-agent incidents.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "gpu_oom",
        titles: &[
            "GPU out of memory",
            "CUDA OOM",
            "CUDA out of memory error",
            "GPU memory exhausted",
            "out of GPU memory",
            "VRAM exhausted on inference worker",
        ],
        descriptions: &[
            "CUDA out of memory: tried to allocate {n} GiB on {a} while serving {b}",
            "{a} ran out of memory while loading the {b} weights",
            "GPU memory exhausted during batch inference of {b} on {a}",
            "torch.cuda.OutOfMemoryError on {a}: {n} GiB already allocated",
            "the {b} worker could not allocate GPU memory ({a}, {n} GiB free)",
        ],
        a_values: &["a100", "h100", "l4", "t4", "a10g"],
        b_values: &[
            "llama-70b",
            "vision-encoder",
            "whisper-large",
            "sdxl",
            "embedder",
        ],
        a_label: "gpu",
    },
    Family {
        name: "llm_rate_limit",
        titles: &[
            "LLM rate limit exceeded",
            "rate limited by the model provider",
            "HTTP 429 from LLM API",
            "too many requests to the model API",
            "provider throttling requests",
        ],
        descriptions: &[
            "{a} returned 429 Too Many Requests; retry after {n} s",
            "request rate limit reached for {b} at {a}",
            "requests per minute limit hit on the {a} API for {b}",
            "the {a} API throttled us: rate limit exceeded ({n} requests queued)",
            "429 rate_limit_error from {a} while calling {b}",
        ],
        a_values: &["openai", "anthropic", "mistral", "bedrock", "vertex"],
        b_values: &["gpt-4o", "claude", "mixtral", "gemini", "command-r"],
        a_label: "provider",
    },
    Family {
        name: "tool_timeout",
        titles: &[
            "tool call timed out",
            "tool timeout",
            "timeout calling tool",
            "tool execution exceeded its deadline",
            "tool did not respond in time",
        ],
        descriptions: &[
            "the {a} tool call exceeded its {n} s timeout",
            "no response from the {a} tool before the deadline ({n} s)",
            "{a} tool timed out after {n} seconds while the agent waited for {b}",
            "tool invocation {a} was cancelled: deadline of {n} s exceeded",
            "timed out waiting for the {a} tool to return",
        ],
        a_values: &[
            "web_search",
            "code_exec",
            "browser",
            "sql_query",
            "file_reader",
        ],
        b_values: &[
            "search results",
            "a page",
            "query rows",
            "the sandbox",
            "output",
        ],
        a_label: "tool",
    },
    Family {
        name: "token_budget",
        titles: &[
            "token budget exceeded",
            "token budget exhausted",
            "run exceeded its token budget",
            "token quota used up",
            "max tokens budget reached for the task",
        ],
        descriptions: &[
            "the agent used {n}k tokens of a {a} token budget for {b}",
            "conversation stopped: token budget of {a} for the run is exhausted",
            "task {b} burned through its token quota ({n}k tokens)",
            "token budget {a} exceeded by the {b} task; further calls refused",
            "stopped the run: cumulative tokens over the budget of {a}",
        ],
        a_values: &["50k", "100k", "200k", "1M", "20k"],
        b_values: &[
            "report-writing",
            "triage",
            "refactor",
            "summarise",
            "research",
        ],
        a_label: "budget",
    },
    Family {
        name: "vector_db_unreachable",
        titles: &[
            "vector database unreachable",
            "cannot connect to the vector store",
            "vector DB down",
            "retrieval store connection refused",
            "vector index not reachable",
        ],
        descriptions: &[
            "connection refused by {a} at {b}:6333",
            "retrieval failed: {a} at {b} is not reachable",
            "could not open a connection to the {a} vector database ({b})",
            "{a} health check failing; vector search unavailable for {n} minutes",
            "RAG lookup aborted, vector store {a} unreachable on {b}",
        ],
        a_values: &["qdrant", "pinecone", "weaviate", "milvus", "pgvector"],
        b_values: &[
            "10.0.3.7",
            "vectors.internal",
            "vdb-1",
            "vdb-2",
            "rag-store",
        ],
        a_label: "vector_db",
    },
    Family {
        name: "context_length",
        titles: &[
            "context length exceeded",
            "prompt too long for the model",
            "maximum context window exceeded",
            "context window overflow",
            "input exceeds model context",
        ],
        descriptions: &[
            "prompt of {n}k tokens exceeds the {a} context of {b}",
            "{b} rejected the request: maximum context length is {a} tokens",
            "context_length_exceeded: the conversation no longer fits the {a} window",
            "could not fit retrieved documents into the {a} context window of {b}",
            "input of {n}k tokens is longer than the model context ({a})",
        ],
        a_values: &["8k", "32k", "128k", "200k", "16k"],
        b_values: &["gpt-4o", "claude", "llama-70b", "mixtral", "gemini"],
        a_label: "context",
    },
    Family {
        name: "invalid_output",
        titles: &[
            "invalid JSON output",
            "model output failed schema validation",
            "structured output parse error",
            "malformed response from the model",
            "response did not match the schema",
        ],
        descriptions: &[
            "could not parse the model response as JSON: unexpected token at position {n}",
            "output of {b} failed validation against the {a} schema",
            "schema validation error in field {a}: expected a string",
            "structured output from {b} is malformed JSON (missing closing brace)",
            "the {a} schema rejected the model answer after {n} repair attempts",
        ],
        a_values: &["ticket", "invoice", "plan", "sql_result", "summary"],
        b_values: &["gpt-4o", "claude", "llama-70b", "mixtral", "gemini"],
        a_label: "schema",
    },
    Family {
        name: "disk_full",
        titles: &[
            "disk full on worker",
            "no space left on device",
            "scratch volume out of space",
            "filesystem full",
            "disk usage critical",
        ],
        descriptions: &[
            "write to {a} failed: ENOSPC (no space left on device) on {b}",
            "disk usage at {n}% on {b}, volume {a} is full",
            "the scratch filesystem {a} on {b} has no free space",
            "could not save checkpoint: {a} is out of disk space",
            "ENOSPC while writing logs to {a} on {b}",
        ],
        a_values: &["/var/lib/agent", "/scratch", "/tmp", "/data", "/models"],
        b_values: &["node-3", "worker-12", "gpu-node-1", "batch-7", "edge-2"],
        a_label: "mount",
    },
    Family {
        name: "auth_failure",
        titles: &[
            "API key rejected",
            "authentication failed with the LLM provider",
            "401 unauthorized from provider",
            "invalid credentials for the model API",
            "expired API token",
        ],
        descriptions: &[
            "{a} returned 401 Unauthorized: invalid API key",
            "authentication error from {a}: the API key was revoked",
            "credentials for {a} expired; every call fails with 401",
            "the {a} API rejected our key for project {b}",
            "unauthorized: incorrect API key provided to {a}",
        ],
        a_values: &["openai", "anthropic", "mistral", "bedrock", "vertex"],
        b_values: &["prod-agents", "research", "support", "billing", "labs"],
        a_label: "provider",
    },
    Family {
        name: "agent_loop",
        titles: &[
            "agent stuck in a loop",
            "repeated identical tool calls",
            "infinite loop detected in the planner",
            "agent making no progress",
            "loop detector tripped",
        ],
        descriptions: &[
            "the agent repeated the same {a} call {n} times without progress",
            "planner loop: identical step issued {n} times in a row",
            "loop detected: agent keeps re-planning the {b} task",
            "no progress after {n} iterations; the agent cycles between {a} and {b}",
            "the loop detector stopped the agent after {n} repeated actions",
        ],
        a_values: &[
            "web_search",
            "code_exec",
            "browser",
            "sql_query",
            "file_reader",
        ],
        b_values: &["refactor", "triage", "research", "booking", "summarise"],
        a_label: "tool",
    },
    Family {
        name: "high_latency",
        titles: &[
            "LLM response latency high",
            "slow model responses",
            "p95 latency above threshold",
            "model API latency degraded",
            "completion latency SLO breach",
        ],
        descriptions: &[
            "p95 latency of {b} at {a} is {n}00 ms, over the SLO",
            "responses from {a} are slow: median {n} s for {b}",
            "latency of the {b} endpoint degraded to {n} s at p99",
            "{a} completions taking {n} s on average; SLO is 2 s",
            "slow first token from {b} ({n} s) at {a}",
        ],
        a_values: &["openai", "anthropic", "mistral", "bedrock", "vertex"],
        b_values: &["gpt-4o", "claude", "mixtral", "gemini", "command-r"],
        a_label: "provider",
    },
    Family {
        name: "webhook_failure",
        titles: &[
            "webhook delivery failed",
            "callback endpoint returned 500",
            "notification webhook errors",
            "outbound webhook failing",
            "cannot deliver event callback",
        ],
        descriptions: &[
            "POST to {a} returned 500 after {n} retries",
            "webhook to {a} failed: connection reset by peer",
            "event callback for {b} could not be delivered to {a}",
            "{n} webhook deliveries to {a} failed in the last hour",
            "the {b} notification webhook at {a} keeps answering 502",
        ],
        a_values: &[
            "hooks.example.invalid",
            "crm.example.invalid/cb",
            "slack-relay",
            "pager-gw",
            "erp.example.invalid",
        ],
        b_values: &[
            "ticket-created",
            "run-finished",
            "alert",
            "invoice",
            "handoff",
        ],
        a_label: "endpoint",
    },
];

/// Agents that raise alerts of every family: sources carry no family signal.
const SOURCES: &[&str] = &[
    "planner-agent",
    "research-agent",
    "coder-agent",
    "vision-agent",
    "support-bot",
    "writer-agent",
    "sql-agent",
    "triage-agent",
];

const ENVS: &[&str] = &["prod", "staging", "dev"];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "ap-south-1"];

/// SplitMix64: a small, fixed generator, so the set is the same everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `per_family` alerts of every family in [`FAMILIES`], shuffled, with ids `alert-0000`…
/// (no family in the id). Deterministic in `seed`.
pub fn labelled_alerts(seed: u64, per_family: usize) -> Vec<LabelledAlert> {
    let mut rng = SplitMix64::new(seed);
    let t0 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let mut out = Vec::new();
    for family in FAMILIES {
        for _ in 0..per_family {
            let a = *rng.pick(family.a_values);
            let b = *rng.pick(family.b_values);
            let n = 2 + rng.below(97);
            let description = rng
                .pick(family.descriptions)
                .replace("{a}", a)
                .replace("{b}", b)
                .replace("{n}", &n.to_string());
            let title = *rng.pick(family.titles);
            let source = format!("{}-{}", rng.pick(SOURCES), rng.below(5));
            let severity = *rng.pick(&AlertSeverity::ALL);
            let mut alert = Alert::new("", title, severity, source);
            alert.description = Some(description);
            alert.status = *rng.pick(&AlertStatus::ALL);
            alert.labels.insert(family.a_label.into(), a.to_owned());
            alert.labels.insert("env".into(), (*rng.pick(ENVS)).into());
            alert
                .labels
                .insert("region".into(), (*rng.pick(REGIONS)).into());
            let start = t0 + TimeDelta::seconds(rng.below(30 * 86_400) as i64);
            alert.start_time = start;
            alert.created_at = start;
            alert.updated_at = start;
            out.push(LabelledAlert {
                family: family.name,
                alert,
            });
        }
    }
    // Shuffle (Fisher–Yates) so that ids do not follow families, then number.
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    for (i, item) in out.iter_mut().enumerate() {
        item.alert.id = format!("alert-{i:04}");
    }
    out
}

/// What [`precision_at_k`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionReport {
    /// Mean over every alert of the share of its `k` nearest (itself excluded) in its family.
    pub precision: f64,
    /// Per family, the same mean over that family's alerts.
    pub by_family: BTreeMap<&'static str, f64>,
    /// For every alert id, the ids of its `k` nearest in rank order.
    pub rankings: BTreeMap<String, Vec<String>>,
}

/// Precision@`k` within the family on `store`, which must hold exactly `set`'s alerts.
pub async fn precision_at_k(
    store: &dyn StorageBackend,
    set: &[LabelledAlert],
    k: usize,
) -> Result<PrecisionReport> {
    let family_of: BTreeMap<&str, &str> = set
        .iter()
        .map(|l| (l.alert.id.as_str(), l.family))
        .collect();
    let mut rankings = BTreeMap::new();
    let mut sums: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    for item in set {
        let found = store
            .find_similar_alerts(&SimilarAlertsQuery::item(&item.alert.id).limit(k))
            .await?;
        let hits = found
            .iter()
            .filter(|s| family_of.get(s.item.id.as_str()) == Some(&item.family))
            .count();
        let p = hits as f64 / k as f64;
        total += p;
        let entry = sums.entry(item.family).or_default();
        entry.0 += p;
        entry.1 += 1;
        rankings.insert(
            item.alert.id.clone(),
            found.into_iter().map(|s| s.item.id).collect(),
        );
    }
    Ok(PrecisionReport {
        precision: total / set.len().max(1) as f64,
        by_family: sums
            .into_iter()
            .map(|(f, (sum, n))| (f, sum / n as f64))
            .collect(),
        rankings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_deterministic_large_and_covers_every_family() {
        let a = labelled_alerts(7, 20);
        assert_eq!(a, labelled_alerts(7, 20));
        assert_ne!(a, labelled_alerts(8, 20));
        assert!(a.len() >= 200);
        assert!(FAMILIES.len() >= 10);
        for family in FAMILIES {
            assert_eq!(a.iter().filter(|l| l.family == family.name).count(), 20);
        }
        for l in &a {
            aimon_core::validate::alert(&l.alert).unwrap();
        }
    }
}
