//! Progress bars on stderr, shown only for people watching a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::output::thousands;

use crate::cli::Global;

/// A bar counting `total` `unit`s; hidden with `--quiet`, `--json`, or when stdout is not a
/// terminal.
pub fn bar(total: u64, unit: &str, global: &Global) -> ProgressBar {
    if global.quiet || global.json || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{rate}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", thousands(state.per_sec() as u64));
        };
        bar.set_style(style.with_key("rate", rate).progress_chars("█▉▊▋▌▍▎▏ "));
    }
    bar
}
