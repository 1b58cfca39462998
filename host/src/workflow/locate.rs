//! Finding things in the source text of a workflow, to give diagnostics a
//! `line:col` where the parser does not (serde keeps no spans for values).
//!
//! The search is textual and best effort: a step is found by its `id:` (or
//! `key:`) line, searched for in file order after the `steps` key, and
//! things inside a step are searched for between that step and the next one.

use std::cell::OnceCell;
use std::ops::Range;

use super::diag::Location;
use super::model::Workflow;

/// Locates steps, keys and values in one workflow source. The source is
/// indexed at the first question: a workflow without problems is never
/// searched (indexing a large one costs more than checking it).
#[derive(Debug)]
pub(crate) struct Locator<'a> {
    file: &'a str,
    source: &'a str,
    wf: &'a Workflow,
    index: OnceCell<Index<'a>>,
}

/// Where the steps of one source are.
#[derive(Debug)]
struct Index<'a> {
    lines: Vec<&'a str>,
    /// Per step: `(line index, 1-based column)` of its id key.
    ids: Vec<Option<(usize, usize)>>,
    /// Per step: the range of line indices it spans (empty when not found).
    regions: Vec<Range<usize>>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn col_of(line: &str, byte: usize) -> usize {
    line.get(..byte).map_or(0, |s| s.chars().count()) + 1
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// If `rest` starts with an optionally quoted `word`, returns the text after
/// it.
fn strip_word<'s>(rest: &'s str, word: &str) -> Option<&'s str> {
    for quote in ["\"", "'"] {
        if let Some(after) = rest
            .strip_prefix(quote)
            .and_then(|r| r.strip_prefix(word))
            .and_then(|r| r.strip_prefix(quote))
        {
            return Some(after);
        }
    }
    rest.strip_prefix(word)
}

/// Byte offset in `line` where `key` (optionally quoted) starts as a mapping
/// key followed by `:` and, when `value` is given, by that scalar value.
fn match_key(line: &str, key: &str, value: Option<&str>) -> Option<usize> {
    let mut search = 0;
    while let Some(found) = line.get(search..).and_then(|s| {
        // candidate starts: the key itself or a quote before it
        let a = s.find(key);
        let b = s.find(&format!("\"{key}\""));
        let c = s.find(&format!("'{key}'"));
        [a, b, c].into_iter().flatten().min()
    }) {
        let start = search + found;
        search = start + line[start..].chars().next().map_or(1, char::len_utf8);
        let before_ok = line[..start]
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, ' ' | '\t' | '-' | '{' | ',' | '['));
        if !before_ok {
            continue;
        }
        let Some(after_key) = strip_word(&line[start..], key) else {
            continue;
        };
        let Some(after_colon) = after_key.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = value else {
            return Some(start);
        };
        let Some(after_value) = strip_word(after_colon.trim_start(), value) else {
            continue;
        };
        let tail = after_value.trim_start();
        if tail.is_empty() || tail.starts_with([',', '}', ']', '#']) {
            return Some(start);
        }
    }
    None
}

/// Byte offset of `token` in `line` where it is not part of a longer
/// identifier.
fn match_token(line: &str, token: &str) -> Option<usize> {
    if token.is_empty() {
        return None;
    }
    let mut search = 0;
    while let Some(found) = line.get(search..).and_then(|s| s.find(token)) {
        let start = search + found;
        let end = start + token.len();
        search = start + line[start..].chars().next().map_or(1, char::len_utf8);
        let before_ok = line[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident_char(c));
        let after_ok = line[end..].chars().next().is_none_or(|c| !is_ident_char(c));
        if before_ok && after_ok {
            return Some(start);
        }
    }
    None
}

impl<'a> Locator<'a> {
    /// A locator in `source` (the text `wf` was parsed from, `file`).
    pub(crate) fn new(source: &'a str, file: &'a str, wf: &'a Workflow) -> Self {
        Locator {
            file,
            source,
            wf,
            index: OnceCell::new(),
        }
    }

    fn index(&self) -> &Index<'a> {
        self.index
            .get_or_init(|| Index::build(self.source, self.wf))
    }
}

impl<'a> Index<'a> {
    /// Indexes `source` (the text `wf` was parsed from).
    fn build(source: &'a str, wf: &Workflow) -> Self {
        let lines: Vec<&str> = source.lines().collect();
        let steps_line = Self::steps_key_line(&lines);
        let mut ids = Vec::with_capacity(wf.steps.len());
        // Search each step after the previous one, so that repeated ids and
        // phase ids before `steps` are told apart.
        let mut cursor = (steps_line, 0usize);
        for step in &wf.steps {
            let found = Self::find_from(&lines, cursor, |line| {
                match_key(line, "id", Some(&step.id))
                    .or_else(|| match_key(line, "key", Some(&step.id)))
            });
            if let Some((l, byte)) = found {
                cursor = (l, byte + 1);
                ids.push(Some((l, col_of(lines[l], byte))));
            } else {
                ids.push(None);
            }
        }
        let starts: Vec<Option<usize>> = ids
            .iter()
            .enumerate()
            .map(|(i, pos)| {
                let (l, _) = (*pos)?;
                let floor = ids[..i]
                    .iter()
                    .rev()
                    .flatten()
                    .next()
                    .map_or(steps_line, |p| p.0 + 1);
                Some(Self::item_start(&lines, l, floor))
            })
            .collect();
        let regions = (0..ids.len())
            .map(|i| match starts[i] {
                None => 0..0,
                Some(start) => {
                    let end = starts[i + 1..]
                        .iter()
                        .flatten()
                        .next()
                        .copied()
                        .unwrap_or(lines.len());
                    start..end.max(start + 1)
                }
            })
            .collect();
        Index {
            lines,
            ids,
            regions,
        }
    }

    /// Line index of the top-level `steps` key (0 when not found).
    fn steps_key_line(lines: &[&str]) -> usize {
        lines
            .iter()
            .position(|l| indent(l) == 0 && match_key(l, "steps", None) == Some(0))
            .or_else(|| {
                lines
                    .iter()
                    .position(|l| l.contains("\"steps\"") && match_key(l, "steps", None).is_some())
            })
            .unwrap_or(0)
    }

    /// For a YAML block mapping whose id key is not the first key of the
    /// item, the line of the item's `- `.
    fn item_start(lines: &[&str], id_line: usize, floor: usize) -> usize {
        let line = lines[id_line].trim_start();
        if line.starts_with('-') || line.contains('{') {
            return id_line;
        }
        let id_indent = indent(lines[id_line]);
        (floor.min(id_line)..id_line)
            .rev()
            .find(|&j| indent(lines[j]) < id_indent && lines[j].trim_start().starts_with('-'))
            .unwrap_or(id_line)
    }

    /// First match of `matcher` at or after `(line, byte)`.
    fn find_from(
        lines: &[&str],
        (line, byte): (usize, usize),
        matcher: impl Fn(&str) -> Option<usize>,
    ) -> Option<(usize, usize)> {
        for (l, text) in lines.iter().enumerate().skip(line) {
            let skip = if l == line { byte.min(text.len()) } else { 0 };
            if let Some(rest) = text.get(skip..) {
                if let Some(b) = matcher(rest) {
                    return Some((l, skip + b));
                }
            }
        }
        None
    }
}

impl Locator<'_> {
    fn loc(&self, line: usize, byte: usize) -> Location {
        let text = self.index().lines.get(line).copied().unwrap_or("");
        Location::new(self.file, line + 1, col_of(text, byte))
    }

    fn search(
        &self,
        range: Range<usize>,
        matcher: impl Fn(&str) -> Option<usize>,
    ) -> Option<Location> {
        let lines = &self.index().lines;
        let end = range.end.min(lines.len());
        (range.start..end).find_map(|l| matcher(lines[l]).map(|b| self.loc(l, b)))
    }

    /// The file alone.
    pub(crate) fn file(&self) -> Location {
        Location::file(self.file)
    }

    /// Where step `i`'s id is, or the file when it cannot be found.
    pub(crate) fn step(&self, i: usize) -> Location {
        match self.index().ids.get(i).copied().flatten() {
            Some((l, col)) => Location::new(self.file, l + 1, col),
            None => self.file(),
        }
    }

    /// The range of lines step `i` spans (empty when it was not found).
    fn region(&self, i: usize) -> Range<usize> {
        self.index().regions.get(i).cloned().unwrap_or(0..0)
    }

    /// Where `key:` is written inside step `i`, else the step.
    pub(crate) fn step_key(&self, i: usize, keys: &[&str]) -> Location {
        let region = self.region(i);
        keys.iter()
            .find_map(|k| self.search(region.clone(), |line| match_key(line, k, None)))
            .unwrap_or_else(|| self.step(i))
    }

    /// Where `token` appears inside step `i`, searching from the first of
    /// `after_keys` that is found (or the whole step); else the step.
    pub(crate) fn step_token(&self, i: usize, after_keys: &[&str], token: &str) -> Location {
        let lines = &self.index().lines;
        let region = self.region(i);
        let end = region.end.min(lines.len());
        let from = after_keys
            .iter()
            .find_map(|k| (region.start..end).find(|&l| match_key(lines[l], k, None).is_some()))
            .unwrap_or(region.start);
        // On the key line itself, look after the key.
        let hit = (from..end).find_map(|l| {
            let text = lines[l];
            let skip = after_keys
                .iter()
                .find_map(|k| match_key(text, k, None).map(|b| b + k.len()))
                .filter(|_| l == from)
                .unwrap_or(0);
            text.get(skip..)
                .and_then(|rest| match_token(rest, token))
                .map(|b| self.loc(l, skip + b))
        });
        hit.or_else(|| self.search(region.clone(), |line| match_token(line, token)))
            .unwrap_or_else(|| self.step(i))
    }

    /// First `key: value` anywhere in the file.
    pub(crate) fn key_value(&self, key: &str, value: &str) -> Option<Location> {
        self.search(0..usize::MAX, |line| match_key(line, key, Some(value)))
    }

    /// First `key:` anywhere in the file.
    pub(crate) fn key(&self, key: &str) -> Option<Location> {
        self.search(0..usize::MAX, |line| match_key(line, key, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse::{parse_str, Format};

    fn parsed(src: &str, format: Format) -> Workflow {
        parse_str(src, "f", format).unwrap()
    }

    fn lc(l: Location) -> (usize, usize) {
        (l.line, l.col)
    }

    #[test]
    fn match_key_variants() {
        assert_eq!(match_key("  - id: foo", "id", Some("foo")), Some(4));
        assert_eq!(match_key("  - id: \"foo\"", "id", Some("foo")), Some(4));
        assert_eq!(match_key("  - id: 'foo'  # c", "id", Some("foo")), Some(4));
        assert_eq!(
            match_key("{\"id\": \"foo\", \"x\": 1}", "id", Some("foo")),
            Some(1)
        );
        assert_eq!(match_key("  - id: foobar", "id", Some("foo")), None);
        assert_eq!(match_key("  - uid: foo", "id", Some("foo")), None);
        assert_eq!(match_key("  - {id: foo}", "id", Some("foo")), Some(5));
        assert_eq!(match_key("  needs: [a]", "needs", None), Some(2));
        assert_eq!(match_key("  needsx: [a]", "needs", None), None);
        assert_eq!(match_key("é: x, ée: y", "ée", Some("y")), Some(7));
        assert_eq!(match_key("éé", "é", None), None);
    }

    #[test]
    fn match_token_boundaries() {
        assert_eq!(match_token("needs: [a-b, b]", "b"), Some(13));
        assert_eq!(match_token("{{ steps.x.output }}", "steps.x"), Some(3));
        assert_eq!(match_token("{{ steps.xy }}", "steps.x"), None);
        assert_eq!(match_token("abc", ""), None);
        assert_eq!(match_token("ééx é", "é"), Some(6));
    }

    #[test]
    fn finds_steps_in_yaml() {
        let src = "name: x\nphases:\n  - id: a\nsteps:\n  - id: b\n    run: x\n  - name: Named\n    id: a\n    needs:\n      - b\n      - zz\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.step(0)), (5, 5));
        assert_eq!(
            lc(loc.step(1)),
            (8, 5),
            "phase id 'a' before steps is skipped"
        );
        assert_eq!(
            lc(loc.step_key(1, &["name"])),
            (7, 5),
            "region starts at the item"
        );
        assert_eq!(lc(loc.step_token(1, &["needs"], "zz")), (11, 9));
        assert_eq!(lc(loc.step_token(1, &["needs"], "b")), (10, 9));
        assert_eq!(lc(loc.step_token(1, &["needs"], "nothere")), (8, 5));
        assert_eq!(lc(loc.step_key(0, &["timeout"])), (5, 5));
    }

    #[test]
    fn finds_repeated_ids_in_order() {
        let src = "name: x\nsteps:\n  - id: a\n    run: x\n  - id: a\n    run: y\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.step(0)), (3, 5));
        assert_eq!(lc(loc.step(1)), (5, 5));
    }

    #[test]
    fn finds_steps_in_json_on_one_line() {
        let src = r#"{"name": "x", "steps": [{"id": "a", "run": "x"}, {"id": "b", "needs": ["a", "zz"], "run": "y"}]}"#;
        let wf = parsed(src, Format::Json);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.step(0)), (1, 26));
        assert_eq!(lc(loc.step(1)), (1, 51));
        assert_eq!(lc(loc.step_token(1, &["needs"], "zz")), (1, 78));
    }

    #[test]
    fn finds_steps_with_key_alias() {
        let src = "name: x\nsteps:\n- key: \"a\"\n  run: x\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.step(0)), (3, 3));
    }

    #[test]
    fn unknown_step_falls_back_to_file() {
        let src = "name: x\nsteps: [{\"id\": \"a b\", run: x}]\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.step(0)), (2, 10));
        let src = "name: x\nsteps:\n  - id: >-\n      a\n    run: x\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(loc.step(0), Location::file("f"));
        assert_eq!(loc.step_key(0, &["run"]), Location::file("f"));
    }

    #[test]
    fn the_source_is_indexed_at_the_first_question_only() {
        let src = "name: x\nsteps:\n  - id: a\n    run: x\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert!(loc.index.get().is_none());
        assert_eq!(lc(loc.step(0)), (3, 5));
        assert!(loc.index.get().is_some());
    }

    #[test]
    fn key_and_key_value_search_the_whole_file() {
        let src = "name: x\nconfig:\n  timeout: 5 parsecs\nsteps: []\n";
        let wf = parsed(src, Format::Yaml);
        let loc = Locator::new(src, "f", &wf);
        assert_eq!(lc(loc.key_value("timeout", "5 parsecs").unwrap()), (3, 3));
        assert_eq!(lc(loc.key("config").unwrap()), (2, 1));
        assert!(loc.key("nothing").is_none());
    }
}
