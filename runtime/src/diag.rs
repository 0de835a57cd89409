//! Diagnostics: problems found in a manifest or reported by a provider, each with the
//! place it refers to (`file:line:col`, or plugin/resource/field). Validation collects all
//! of them and reports them together, sorted by place, so the operator fixes everything
//! in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

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
        match &self.location {
            Some(loc) => write!(f, "{loc}: {sev}: {}", self.message),
            None => write!(f, "{sev}: {}", self.message),
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

/// Validation found at least one error; carries every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{} problem(s) found", .0, .0.iter().filter(|d| d.severity == Severity::Error).count())]
pub struct ValidationFailed(pub Diagnostics);

#[cfg(test)]
mod tests {
    use super::*;

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
