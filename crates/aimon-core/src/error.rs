//! The one error type of aimon (DESIGN.md rule 8).

use std::fmt;

/// What went wrong, independent of the backend. Callers branch on this, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something the contract rejects (bad name, NaN value, unknown filter field…).
    InvalidInput,
    /// The named thing does not exist (a backend name, a backup path…).
    NotFound,
    /// The backend does not do this; see [`crate::Capabilities`].
    Unsupported,
    /// The configuration (URL, options) is wrong.
    ConfigInvalid,
    /// The store cannot be reached right now; retrying may help.
    Unavailable,
    /// The operation took too long; retrying may help.
    Timeout,
    /// The write conflicts with what is stored.
    Conflict,
    /// Stored or archived data is not what it should be.
    Corrupted,
    /// The backend answered with an error that fits no other kind.
    Backend,
}

impl ErrorKind {
    /// Whether the same call may succeed if simply tried again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ConfigInvalid => "invalid configuration",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Corrupted => "corrupted data",
            ErrorKind::Backend => "backend error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An aimon error: a kind, the operation, the backend, a message and an optional source.
///
/// Messages and context never contain credentials: drivers redact connection strings with
/// [`crate::config::redact_url`] before they put one in an error.
pub struct Error {
    kind: ErrorKind,
    message: String,
    operation: Option<&'static str>,
    backend: Option<String>,
    context: Vec<(&'static str, String)>,
    source: Option<Source>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message for people; add the rest with the `with_*` builders.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            operation: None,
            backend: None,
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error that names the offending field.
    pub fn invalid_input(field: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidInput, format!("{field}: {problem}"))
    }

    /// An [`ErrorKind::Unsupported`] error: "`what` is not supported by this backend".
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            format!("{what} is not supported by this backend"),
        )
    }

    /// An [`ErrorKind::ConfigInvalid`] error; never put an unredacted URL in `message`.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::ConfigInvalid, message)
    }

    /// Shorthand for an [`ErrorKind::Corrupted`] error: stored or archived data is not what it
    /// should be.
    pub fn corrupted(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupted, message)
    }

    /// A stored value that does not decode: `stored {what} is malformed`, as
    /// [`ErrorKind::Corrupted`].
    pub fn malformed(what: impl fmt::Display) -> Self {
        Error::corrupted(format!("stored {what} is malformed"))
    }

    /// Names the call that failed (`save_metrics`); shown first in the message.
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Names the backend (its configured name) the call ran on; replaces an earlier one.
    pub fn with_backend(mut self, backend: impl Into<String>) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Appends a `key=value` pair to the message (a file, a line, an id); never a secret.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Keeps the underlying error; `Display` appends it and `source()` returns it.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong; branch on this, never on the message.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone, without operation, backend, context or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The failed call, if one was named.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// The backend's name, if one was named.
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// The `key=value` pairs added with [`Error::with_context`], in order.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// Whether the same call may succeed if retried ([`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Writes `text` with every control character made harmless: tabs and line breaks become
/// spaces (a message stays one line in a log or a terminal), any other control character (ESC,
/// BEL, DEL, the C1 controls…) is written as a visible `\u{…}` escape, so text that came from a
/// hostile archive, URL or server answer can never clear a screen or forge a log line.
pub fn write_printable(f: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_control()) {
        f.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or(' ');
        match c {
            '\t' | '\n' | '\r' => f.write_char(' ')?,
            c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    f.write_str(rest)
}

/// `text` as [`write_printable`] writes it.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(|c: char| c.is_control()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let _ = write_printable(&mut out, text);
    std::borrow::Cow::Owned(out)
}

/// A `fmt::Write` that passes everything through [`write_printable`].
struct Printable<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Printable<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_printable(self.0, s)
    }
}

/// The message, context and source chain contain no control characters (see
/// [`write_printable`]): they may quote an archive's file names, a server's answer or a
/// user's input.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        write!(Printable(f), "{}", DisplayRaw(self))
    }
}

/// The text of an [`Error`] before control characters are made harmless.
struct DisplayRaw<'a>(&'a Error);

impl fmt::Display for DisplayRaw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let this = self.0;
        if let Some(op) = this.operation {
            write!(f, "{op}")?;
            if let Some(backend) = &this.backend {
                write!(f, " on {backend}")?;
            }
            f.write_str(": ")?;
        } else if let Some(backend) = &this.backend {
            write!(f, "{backend}: ")?;
        }
        write!(f, "{}: {}", this.kind, this.message)?;
        for (key, value) in &this.context {
            write!(f, ", {key}={value}")?;
        }
        if let Some(source) = &this.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(op) = self.operation {
            d.field("operation", &op);
        }
        if let Some(backend) = &self.backend {
            d.field("backend", backend);
        }
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| s.as_ref() as _)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::corrupted("malformed JSON").with_source(err)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                ErrorKind::Corrupted
            }
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::NotConnected => ErrorKind::Unavailable,
            _ => ErrorKind::Backend,
        };
        Error::new(kind, "I/O error").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_backend_kind_and_context() {
        let err = Error::invalid_input("tags[\"host\"]", "contains a control character")
            .with_operation("save_metrics")
            .with_backend("sqlite-main")
            .with_context("metric_id", "m1");
        assert_eq!(
            err.to_string(),
            "save_metrics on sqlite-main: invalid input: tags[\"host\"]: contains a control character, metric_id=m1"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!err.is_retryable());
    }

    #[test]
    fn control_characters_never_reach_the_text() {
        let err = Error::corrupted("metrics\u{1b}[2J\u{1b}[31mRED is missing")
            .with_context("line", "a\nb\tc\u{7f}\u{9b}")
            .with_source(std::io::Error::other("server said\r\n\u{7}bell"));
        let text = err.to_string();
        assert!(!text.contains(|c: char| c.is_control()), "{text:?}");
        assert_eq!(
            text,
            "corrupted data: metrics\\u{1b}[2J\\u{1b}[31mRED is missing, line=a b c\\u{7f}\\u{9b}: server said  \\u{7}bell"
        );
        assert_eq!(printable("plain é 🚀"), "plain é 🚀");
        assert_eq!(printable("\u{1b}"), "\\u{1b}");
    }

    #[test]
    fn connection_loss_is_retryable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = Error::from(io);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
    }
}
