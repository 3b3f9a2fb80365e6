//! Diagnostics: one problem found in a configuration, with its location and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a configuration file (1-based line and column; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Loc {
    pub file: PathBuf,
    pub line: u64,
    pub col: u64,
}

impl Loc {
    pub fn new(file: impl Into<PathBuf>, line: u64, col: u64) -> Self {
        Self { file: file.into(), line, col }
    }

    /// A location that names the file only.
    pub fn file(file: &Path) -> Self {
        Self { file: file.to_path_buf(), line: 0, col: 0 }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub loc: Loc,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(loc: Loc, message: impl Into<String>) -> Self {
        Self { loc, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one validation pass, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sorts by file, line and column so output reads top to bottom.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| (&a.loc.file, a.loc.line, a.loc.col).cmp(&(&b.loc.file, b.loc.line, b.loc.col)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        write!(f, "{} problem(s) found", self.0.len())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to a misspelt word, if one is close enough to suggest.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let fields = ["owner", "group", "mode", "target_path"];
        assert_eq!(did_you_mean("ownr", fields), Some("owner"));
        assert_eq!(did_you_mean("taget_path", fields), Some("target_path"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn display_has_location_and_hint() {
        let d = Diagnostic::new(Loc::new("m.yaml", 3, 5), "unknown field `ownr`").hint("did you mean `owner`?");
        assert_eq!(d.to_string(), "m.yaml:3:5: unknown field `ownr`\n  hint: did you mean `owner`?");
    }
}
