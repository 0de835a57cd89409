//! The live progress display of `apply` on a terminal: done/total, elapsed time and what
//! is running, drawn on stderr by `indicatif`; result lines are printed above it on
//! stdout. Off a terminal (or with `--json`) it draws nothing and lines go straight out.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};

/// How many running resources the status line names before summarising the rest.
const NAMED_RUNNING: usize = 3;

pub struct LiveProgress {
    bar: Option<ProgressBar>,
    running: BTreeSet<String>,
}

impl LiveProgress {
    /// A display for `total` resources, drawn only when `enabled` and stderr is a terminal.
    pub fn new(total: usize, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        LiveProgress {
            bar,
            running: BTreeSet::new(),
        }
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let mut names: Vec<&str> = self
                .running
                .iter()
                .take(NAMED_RUNNING)
                .map(String::as_str)
                .collect();
            let more = self.running.len().saturating_sub(NAMED_RUNNING);
            let more = if more > 0 {
                format!(" (+{more})")
            } else {
                String::new()
            };
            if names.is_empty() {
                names.push("…");
            }
            bar.set_message(format!("running: {}{more}", names.join(", ")));
        }
    }

    pub fn started(&mut self, id: &str) {
        self.running.insert(id.to_owned());
        self.refresh();
    }

    pub fn finished(&mut self, id: &str) {
        self.running.remove(id);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.refresh();
    }

    /// Print a line on stdout, above the display.
    pub fn println(&self, text: &str) {
        let write = || {
            let mut out = anstream::stdout();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
