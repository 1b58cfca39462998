//! Diagnostics: one-line, user-facing messages about a workflow file.
//!
//! A [`Diagnostic`] prints as `file:line:col: step 'id': message`, leaving out
//! the parts it does not know. [`Diagnostics`] collects several of them and is
//! the error type of parsing, validation and loading.

use std::fmt;

/// A place in a workflow file.
///
/// `line` and `col` are 1-based. A `line` of 0 means only the file is known
/// (printed as `file`); a `col` of 0 means the column is unknown (printed as
/// `file:line`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file name as the user gave it.
    pub file: String,
    /// 1-based line, or 0 when unknown.
    pub line: usize,
    /// 1-based column, or 0 when unknown.
    pub col: usize,
}

impl Location {
    /// A location at `line:col` of `file`.
    pub fn new(file: impl Into<String>, line: usize, col: usize) -> Self {
        Location {
            file: file.into(),
            line,
            col,
        }
    }

    /// A location naming only the file.
    pub fn file(file: impl Into<String>) -> Self {
        Location::new(file, 0, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.col > 0 {
                write!(f, ":{}", self.col)?;
            }
        }
        Ok(())
    }
}

/// One problem found in a workflow (or its arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is, when known.
    pub location: Option<Location>,
    /// The step the problem belongs to, when there is one.
    pub step: Option<String>,
    /// What is wrong, without location or step prefix.
    pub message: String,
}

/// The longest message a [`Diagnostic`] keeps, in characters.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// `message`, cut to [`MAX_MESSAGE_CHARS`] with a note of how much was left out.
fn shorten(message: String) -> String {
    let total = message.chars().count();
    if total <= MAX_MESSAGE_CHARS {
        return message;
    }
    let kept: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!("{kept}… ({} more characters)", total - MAX_MESSAGE_CHARS)
}

impl Diagnostic {
    /// A diagnostic with only a message. A message longer than
    /// [`MAX_MESSAGE_CHARS`] (a parser quoting a huge value) is cut, so an
    /// error stays one readable line whatever the file holds.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            step: None,
            message: shorten(message.into()),
        }
    }

    /// Sets the location.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// Sets the location if one is given (keeps the current one otherwise).
    pub fn at_opt(mut self, location: Option<Location>) -> Self {
        if location.is_some() {
            self.location = location;
        }
        self
    }

    /// Sets the step id.
    pub fn for_step(mut self, step: impl Into<String>) -> Self {
        self.step = Some(step.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if let Some(step) = &self.step {
            write!(f, "step '{step}': ")?;
        }
        // Keep the promise of one line per diagnostic.
        if self.message.contains('\n') {
            f.write_str(&self.message.replace('\n', " "))
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for Diagnostic {}

/// A list of problems; the error type of parsing, validation and loading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    /// Adds one diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// True when there is no diagnostic.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many diagnostics there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the diagnostics.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when empty, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_diagnostic_prints_file_line_col_step_message() {
        let d = Diagnostic::new("needs unknown step 'zz'")
            .at(Location::new("wf.yaml", 3, 5))
            .for_step("b");
        assert_eq!(
            d.to_string(),
            "wf.yaml:3:5: step 'b': needs unknown step 'zz'"
        );
    }

    #[test]
    fn missing_parts_are_left_out() {
        assert_eq!(Diagnostic::new("boom").to_string(), "boom");
        assert_eq!(
            Diagnostic::new("boom").for_step("a").to_string(),
            "step 'a': boom"
        );
        assert_eq!(
            Diagnostic::new("boom")
                .at(Location::file("wf.yaml"))
                .to_string(),
            "wf.yaml: boom"
        );
        assert_eq!(
            Diagnostic::new("boom")
                .at(Location::new("wf.yaml", 7, 0))
                .to_string(),
            "wf.yaml:7: boom"
        );
    }

    #[test]
    fn message_is_kept_on_one_line() {
        let d = Diagnostic::new("first\nsecond");
        assert_eq!(d.to_string(), "first second");
    }

    #[test]
    fn at_opt_keeps_existing_location_when_none() {
        let d = Diagnostic::new("x")
            .at(Location::new("f", 1, 1))
            .at_opt(None);
        assert_eq!(d.location, Some(Location::new("f", 1, 1)));
    }

    #[test]
    fn diagnostics_print_one_per_line_and_are_errors() {
        let mut ds = Diagnostics::new();
        assert!(ds.is_empty());
        ds.push(Diagnostic::new("one").for_step("a"));
        ds.push(Diagnostic::new("two").at(Location::new("f.json", 2, 1)));
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.to_string(), "step 'a': one\nf.json:2:1: two");
        let err: Box<dyn std::error::Error> = Box::new(ds.clone());
        assert_eq!(err.to_string(), ds.to_string());
        assert!(ds.into_result(()).is_err());
        assert_eq!(Diagnostics::new().into_result(5), Ok(5));
    }
}
