//! Printing: tables (comfy-table), JSON, and the small formatting helpers they share.

use std::io::Write;

use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use crate::error::Result;

/// A table with a header row; columns whose header is in `right` are right-aligned.
pub fn table<S: AsRef<str>>(header: &[S], right: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| Cell::new(h.as_ref())));
    // A terminal that reports no useful width (a bare pty) would squash every column.
    if table.width().is_some_and(|w| w < 40) {
        table.set_content_arrangement(ContentArrangement::Disabled);
    }
    for (i, h) in header.iter().enumerate() {
        if right.contains(&h.as_ref())
            && let Some(column) = table.column_mut(i)
        {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Prints `value` as pretty JSON on stdout. A reader that closed the pipe early (`aimon …
/// --json | head`) ends the output quietly, as Unix tools do: it asked for no more.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::error::CliError::new(format!(
            "cannot write JSON: {e}"
        ))),
        Ok(()) => Ok(()),
    }
}

/// Prints a line on stdout, ignoring a closed pipe (`aimon … | head`). Stored text reaches
/// tables (an alert's description may hold any character but NUL), so every control character
/// but the line breaks of a table is written as a visible escape: nothing printed can move the
/// cursor, change colours or clear the screen.
pub fn line(text: impl std::fmt::Display) {
    let text = text.to_string();
    let mut out = std::io::stdout().lock();
    let mut lines = text.split('\n').peekable();
    while let Some(one) = lines.next() {
        let _ = write!(out, "{}", aimon::error::printable(one));
        if lines.peek().is_some() {
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out);
}

/// A timestamp for tables: `2024-05-01 12:00:00`.
pub fn time(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(ts: Option<DateTime<Utc>>) -> String {
    ts.map(time).unwrap_or_else(|| "-".to_owned())
}

/// How long ago `ts` was, coarsely: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(ts: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - ts).num_seconds();
    if secs < 0 {
        return "in the future".to_owned();
    }
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// An integer with thousands separators: `1,036,800`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A float with a sensible number of decimals for tables.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1_000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.5}")
    }
}

/// Tags as `k=v, k=v`.
pub fn tags(tags: &aimon::Tags) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds of a `std::time::Duration`, for latency reports.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_036_800), "1,036,800");
    }

    #[test]
    fn ago_is_coarse() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::TimeDelta::seconds(5), now), "5s ago");
        assert_eq!(ago(now - chrono::TimeDelta::minutes(5), now), "5m ago");
        assert_eq!(ago(now - chrono::TimeDelta::hours(3), now), "3h ago");
        assert_eq!(ago(now - chrono::TimeDelta::days(2), now), "2d ago");
    }
}
