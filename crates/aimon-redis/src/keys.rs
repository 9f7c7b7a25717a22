//! The key layout (see the crate docs for the reasoning). Every key name is built here.
//!
//! User text (ids, names, tags, statuses) is percent-encoded: every byte outside
//! `[A-Za-z0-9._/-]` becomes `%XX`, so glob characters, braces (hash-tag syntax), `:`,
//! spaces and newlines can never change which key is touched, and two different ids never
//! map to one key.

/// Percent-encodes `s` for use inside a key name.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._/-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A key of `namespace`'s namespace slot, `{namespace}:<rest>` (see the crate docs' key
/// layout): on a Cluster it lives on the same master as the namespace's metadata, alerts and
/// indexes. Public API for tools that need a scratch key next to a store's keys, as the
/// `aimon bench --compare-redis-benchmark` baseline. `rest` is used as is (not escaped): pick
/// one that no key of the layout uses, and delete the key afterwards.
pub fn namespace_key(namespace: &str, rest: &str) -> String {
    format!("{{{namespace}}}:{rest}")
}

/// The five keys of one series' samples (one slot, `{NS|id}`; see the crate docs).
#[derive(Debug, Clone)]
pub(crate) struct SampleKeys {
    /// Hash: tag sets (`#` + hash → tags JSON) and the series' chunk state.
    pub(crate) state: String,
    /// List: head segments, appended per batch.
    pub(crate) head: String,
    /// Hash: `window:tagset` → chunk bytes.
    pub(crate) chunks: String,
    /// Hash: `window:tagset` → summary bytes.
    pub(crate) summaries: String,
    /// Sorted set: the windows with samples in the head, scored by how many.
    pub(crate) head_windows: String,
}

impl SampleKeys {
    /// The keys in script order: state, head, chunks, summaries, head windows.
    pub(crate) fn all(&self) -> [&str; 5] {
        [
            &self.state,
            &self.head,
            &self.chunks,
            &self.summaries,
            &self.head_windows,
        ]
    }
}

/// The key names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    ns: String,
}

impl Keys {
    pub(crate) fn new(ns: &str) -> Self {
        Keys { ns: ns.to_owned() }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.ns
    }

    fn ns_key(&self, rest: &str) -> String {
        namespace_key(&self.ns, rest)
    }

    /// The set of every secondary index key of the namespace (for retention sweeps).
    pub(crate) fn registry(&self) -> String {
        self.ns_key("idx")
    }

    /// The pub/sub channel of write events.
    pub(crate) fn channel(&self) -> String {
        self.ns_key("events")
    }

    // Series metadata (namespace slot).
    pub(crate) fn series_index(&self) -> String {
        self.ns_key("m:idx")
    }
    pub(crate) fn series_meta(&self, id: &str) -> String {
        self.ns_key(&format!("m:meta:{}", esc(id)))
    }
    pub(crate) fn series_by_name(&self, name: &str) -> String {
        self.ns_key(&format!("m:name:{}", esc(name)))
    }
    pub(crate) fn series_by_type(&self, ty: &str) -> String {
        self.ns_key(&format!("m:type:{}", esc(ty)))
    }
    /// Series with a live sample tagged `key=value`, scored by when the last such sample
    /// expires.
    pub(crate) fn series_by_tag(&self, key: &str, value: &str) -> String {
        self.ns_key(&format!("m:tag:{}:{}", esc(key), esc(value)))
    }

    // Samples (one slot per series).
    fn series_tag(&self, id: &str) -> String {
        format!("{{{}|{}}}", self.ns, esc(id))
    }
    /// The keys of one series' samples, in the order the chunk scripts take them.
    pub(crate) fn series_samples(&self, id: &str) -> SampleKeys {
        let tag = self.series_tag(id);
        SampleKeys {
            state: format!("{tag}:t"),
            head: format!("{tag}:h"),
            chunks: format!("{tag}:c"),
            summaries: format!("{tag}:s"),
            head_windows: format!("{tag}:w"),
        }
    }
    /// The sorted set of samples of the layout before chunks (migrated at connect).
    pub(crate) fn legacy_samples(&self, id: &str) -> String {
        format!("{}:z", self.series_tag(id))
    }
    /// The hash of sample values of the layout before chunks.
    pub(crate) fn legacy_values(&self, id: &str) -> String {
        format!("{}:v", self.series_tag(id))
    }
    /// Set to `2` once every series of the namespace is in the chunk layout.
    pub(crate) fn layout(&self) -> String {
        self.ns_key("layout")
    }

    // Alerts (namespace slot).
    pub(crate) fn alert_index(&self) -> String {
        self.ns_key("a:idx")
    }
    pub(crate) fn alert(&self, id: &str) -> String {
        self.ns_key(&format!("a:item:{}", esc(id)))
    }
    pub(crate) fn alerts_by_status(&self, status: &str) -> String {
        self.ns_key(&format!("a:status:{}", esc(status)))
    }
    pub(crate) fn alerts_by_severity(&self, rank: i64) -> String {
        self.ns_key(&format!("a:sev:{rank}"))
    }
    pub(crate) fn alerts_by_source(&self, source: &str) -> String {
        self.ns_key(&format!("a:source:{}", esc(source)))
    }
    pub(crate) fn alerts_by_label(&self, key: &str, value: &str) -> String {
        self.ns_key(&format!("a:label:{}:{}", esc(key), esc(value)))
    }

    // Agent states (namespace slot).
    pub(crate) fn agent_index(&self) -> String {
        self.ns_key("s:idx")
    }
    pub(crate) fn agent(&self, agent_id: &str) -> String {
        self.ns_key(&format!("s:item:{}", esc(agent_id)))
    }
    pub(crate) fn agents_by_status(&self, status: &str) -> String {
        self.ns_key(&format!("s:status:{}", esc(status)))
    }

    /// The part of `key` after this namespace's name (`}:a:idx`, `|id}:z`), or `None` for a
    /// key of another namespace. A native backup stores keys this way so they can be restored
    /// under another namespace.
    pub(crate) fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix('{')?.strip_prefix(self.ns.as_str())?;
        (rest.starts_with('}') || rest.starts_with('|')).then_some(rest)
    }

    /// The inverse of [`Keys::relative`].
    pub(crate) fn absolute(&self, relative: &str) -> String {
        format!("{{{}{relative}", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_never_changes_the_key_shape() {
        let keys = Keys::new("ns");
        for hostile in [
            "*", "a?b", "[x]", "{tag}", "a b", "a\nb", "x:y", "%41", "ü🦀",
        ] {
            let key = keys.series_samples(hostile).head;
            assert!(key.starts_with("{ns|") && key.ends_with("}:h"), "{key}");
            let inner = &key[1..key.len() - 3];
            assert!(
                !inner.contains(['{', '}', '*', '?', '[', ']', ' ', '\n']),
                "{key}"
            );
        }
        assert_ne!(keys.series_meta("%41"), keys.series_meta("A"));
        assert_ne!(
            keys.alerts_by_label("a:b", "c"),
            keys.alerts_by_label("a", "b:c")
        );
        assert_eq!(esc("A/b-c_d.e"), "A/b-c_d.e");
    }

    #[test]
    fn one_series_shares_one_hash_tag() {
        let keys = Keys::new("ns");
        let tag = |k: &str| k[1..k.find('}').unwrap()].to_owned();
        let series = keys.series_samples("a{b}c");
        for key in series.all() {
            assert_eq!(tag(key), tag(&keys.legacy_values("a{b}c")));
        }
        assert_eq!(tag(&keys.series_meta("x")), "ns");
        assert_eq!(tag(&keys.alert("x")), "ns");
    }

    #[test]
    fn relative_keys_move_between_namespaces() {
        let a = Keys::new("one");
        let b = Keys::new("two");
        let key = a.series_samples("s").chunks;
        assert_eq!(
            b.absolute(a.relative(&key).unwrap()),
            b.series_samples("s").chunks
        );
        let key = a.alert_index();
        assert_eq!(b.absolute(a.relative(&key).unwrap()), b.alert_index());
        assert_eq!(a.relative(&Keys::new("on").alert_index()), None);
        assert_eq!(a.relative(&Keys::new("one2").alert_index()), None);
    }
}
