//! The error every command returns: one line of text for stderr.

use std::fmt;

/// A runtime failure, printed as `error: …` on one line (exit code 1).
#[derive(Debug)]
pub struct CliError(String);

pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError(message.into())
    }
}

/// aimon's `Display` never contains passwords (connection strings are redacted).
impl From<aimon::Error> for CliError {
    fn from(e: aimon::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<figment::Error> for CliError {
    fn from(e: figment::Error) -> Self {
        CliError(format!("invalid configuration: {e}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError(format!("cannot write JSON: {e}"))
    }
}

impl fmt::Display for CliError {
    /// Always a single line: newlines in wrapped messages become spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = self.0.split_whitespace().collect::<Vec<_>>().join(" ");
        aimon::error::write_printable(f, &one_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = CliError::new("first\n  second\r\nthird");
        assert_eq!(e.to_string(), "first second third");
    }

    #[test]
    fn control_characters_are_escaped() {
        let e = CliError::new("name \u{1b}[2J\u{1b}[31mRED");
        assert_eq!(e.to_string(), "name \\u{1b}[2J\\u{1b}[31mRED");
    }
}
