//! Diagnostics: problems found in a manifest or reported by a provider, each with the
//! place it refers to (`file:line:col`, or plugin/resource/field). Validation collects all
//! of them and reports them together, sorted by place, so the operator fixes everything
//! in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error and its causes on one line (`a: b: c`), each cause once: clients of
/// registries and services nest the useful part (refused, timed out) several levels
/// down.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// A place in a manifest file. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Location {
            file: file.into(),
            line,
            column,
        }
    }

    /// The start of `file`, for problems with no better place.
    pub fn file(file: &Path) -> Self {
        Location::new(file, 1, 1)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let message = terminal_text(&self.message, CONTINUATION);
        match &self.location {
            Some(loc) => write!(f, "{loc}: {sev}: {message}"),
            None => write!(f, "{sev}: {message}"),
        }
    }
}

/// A collection of problems, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, location: Option<Location>, message: impl Into<String>) {
        self.0.push(Diagnostic {
            severity: Severity::Error,
            location,
            message: message.into(),
        });
    }

    pub fn warning(&mut self, location: Option<Location>, message: impl Into<String>) {
        self.0.push(Diagnostic {
            severity: Severity::Warning,
            location,
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Sorted by place (problems without one last), duplicates removed.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (a.location.is_none(), &a.location, a.severity, &a.message).cmp(&(
                b.location.is_none(),
                &b.location,
                b.severity,
                &b.message,
            ))
        });
        self.0.dedup();
        self
    }

    /// `Ok(warnings)` when there is no error, the whole set otherwise.
    pub fn into_result(self) -> Result<Diagnostics, ValidationFailed> {
        if self.has_errors() {
            Err(ValidationFailed(self.sorted()))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Most bytes of one message shown on a terminal (errors quote providers and programs,
/// who control their length); the rest is counted, not shown.
pub const MAX_TERMINAL_TEXT_BYTES: usize = 8 * 1024;

/// What starts every continuation line of a multi-line message: an indent and a bar, so
/// no line of it stands at column 0 where Tenet's own output does.
pub const CONTINUATION: &str = "    │ ";

/// Text that may come from a provider (an error, a log message, a diagnostic, a value)
/// made safe to print among Tenet's own lines: control characters other than newline and
/// tab are escaped (`\r`, `\u{1b}`: no carriage return over a line, no escape sequence),
/// every line after the first starts with `continuation`, and the text is cut at
/// [`MAX_TERMINAL_TEXT_BYTES`]. JSON output does not need this: it keeps one string.
pub fn terminal_text(text: &str, continuation: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TERMINAL_TEXT_BYTES) + 16);
    let mut shown = 0;
    for c in text.chars() {
        if shown >= MAX_TERMINAL_TEXT_BYTES {
            out.push_str(&format!(" … ({} more bytes not shown)", text.len() - shown));
            break;
        }
        shown += c.len_utf8();
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(continuation);
            }
            '\t' => out.push('\t'),
            c if c.is_control() || is_bidi_control(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// One line of provider text (a log message, a line of a diff): as [`terminal_text`],
/// with newlines escaped too.
pub fn one_line(text: &str) -> String {
    terminal_text(&text.replace('\n', "\\n"), "")
}

/// Characters that change what a terminal shows without showing themselves:
/// bidirectional overrides and marks ("Trojan Source") and Unicode's line separators.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Validation found at least one error; carries every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{} problem(s) found", .0, .0.iter().filter(|d| d.severity == Severity::Error).count())]
pub struct ValidationFailed(pub Diagnostics);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_cannot_pass_as_tenets_own_lines() {
        // Regression (issue 12): a provider error forging Tenet's closing line.
        let forged = "disk full\nApply complete! 0 failed.\r\u{1b}[2Kok\u{202e}";
        let shown = terminal_text(forged, CONTINUATION);
        assert_eq!(
            shown,
            "disk full\n    │ Apply complete! 0 failed.\\r\\u{1b}[2Kok\\u{202e}"
        );
        assert!(shown.lines().skip(1).all(|l| l.starts_with(CONTINUATION)));
        assert_eq!(one_line("a\nb\rc"), "a\\nb\\rc");
        let long = "x".repeat(MAX_TERMINAL_TEXT_BYTES + 10);
        assert!(terminal_text(&long, "").ends_with("… (10 more bytes not shown)"));
    }

    #[test]
    fn diagnostics_indent_continuation_lines() {
        let mut d = Diagnostics::new();
        d.error(Some(Location::new("a.yaml", 2, 5)), "bad\nerror: forged");
        assert_eq!(
            d.to_string(),
            "a.yaml:2:5: error: bad\n    │ error: forged\n"
        );
    }

    #[test]
    fn sorted_by_place_then_unplaced() {
        let mut d = Diagnostics::new();
        d.error(None, "global");
        d.error(Some(Location::new("a.yaml", 9, 1)), "late");
        d.error(Some(Location::new("a.yaml", 2, 5)), "early");
        let text = d.sorted().to_string();
        assert_eq!(
            text,
            "a.yaml:2:5: error: early\na.yaml:9:1: error: late\nerror: global\n"
        );
    }
}
