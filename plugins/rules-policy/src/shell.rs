//! Split a shell command line into the simple commands it would run.
//!
//! The splitter reads a line as `/bin/sh` (a POSIX shell; dash on Debian)
//! reads it, and refuses (returns an error, which the policy turns into
//! `ask`) whatever it cannot read with confidence. A differential test runs
//! every case through the real `sh` and compares.
//!
//! - Separators: `&&`, `||`, `;`, `|`, `&`, newlines, and the parentheses of
//!   sub-shells `( ... )`. `&>` is `&` then `>` as in POSIX sh:
//!   `a &>/dev/null b` runs `a` in the background, then `b`.
//! - A `#` that starts a word begins a comment up to the end of the line;
//!   nothing inside it counts (no quote, no backslash continues it).
//! - Quotes (`'...'`, `"..."`) and backslash escapes are removed, so `"rm"`
//!   and `r\m` are both the word `rm`; a backslash-newline joins two lines.
//!   `$VAR` and `${VAR}` stay as written.
//! - Redirections between descriptors (`2>&1`, `>&2`, `<&0`, `2>&-`) and to
//!   or from `/dev/null` are dropped from the words.
//!
//! Some commands are split but in doubt ([`SimpleCommand::doubt`]): their
//! words are reported, so that deny rules see them, but no pattern may allow
//! them. These are command substitutions `$( ... )` and `` `...` `` (their
//! commands and the command holding them, which shows the word `$(…)`);
//! commands after a shell keyword (`if`, `then`, `do`, `!`, `{` ...: the
//! keywords are removed from the words); `for` loops; and builtins that run
//! text as shell code or start another program (`eval`, `.`, `source`,
//! `trap`, `alias`, `exec`, `command`: the last two are removed from the
//! words, so `exec rm x` is checked as `rm x`).
//!
//! Refused: unbalanced quotes, parentheses or backticks; a trailing
//! backslash; an operator without a command before it (`;;`, `|&`, `; a`)
//! or a `|`, `&&`, `||` without one after it; an empty `( )`; a `(` inside a
//! command (function definitions); a word after a sub-shell's `)`; `case`;
//! here-documents and here-strings (`<<`, `<<<`); process substitution
//! (`<(`, `>(`); arithmetic `$(( ))`; `$'...'` and `$"..."` quoting;
//! `${...}` holding anything but a parameter name (`${x:-$(rm y)}`);
//! redirections to or from any file other than `/dev/null` (a write the
//! file rules would not see); a NUL character; an empty line.
//!
//! A command whose program name is computed (`$CMD x`, `r{m,} x`, `/bin/r?`)
//! is split like any other; see [`SimpleCommand::computed_program`].
//!
//! Not interpreted (they stay ordinary words, so a rule must match them
//! literally): variable assignments (`FOO=1 cargo test`), globs in
//! arguments. Wrappers such as `sh -c`, `bash -c`, `env`, `xargs` or
//! `find -exec` run what they are given: a rule that allows them allows
//! whatever they run.

use std::fmt;

/// One simple command: its words, quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The words, e.g. `["cargo", "test", "-p", "x"]`.
    pub words: Vec<String>,
    /// Why the splitter is not sure that these words are all this command
    /// runs (a command substitution, a keyword, `eval` ...); `None` when it
    /// is sure. A command in doubt is never allowed by a pattern.
    pub doubt: Option<String>,
}

impl SimpleCommand {
    /// The words joined by single spaces: what rules are matched against.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The program name when it is computed at run time, so that no pattern
    /// can tell what runs: it holds `$` (a variable or a substitution),
    /// braces, parentheses, backticks or glob characters (`$CMD x`,
    /// `$(echo rm) x`, `r{m,} x`, `/bin/r?`).
    pub fn computed_program(&self) -> Option<&str> {
        self.program()
            .filter(|name| name.contains(['$', '{', '}', '*', '?', '[', ']', '(', ')', '`']))
    }

    /// The program it starts: the first word that is not a variable
    /// assignment (`FOO=1`), if any.
    pub fn program(&self) -> Option<&str> {
        self.words
            .iter()
            .map(String::as_str)
            .find(|w| !is_assignment(w))
    }
}

/// `NAME=value`.
fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

impl fmt::Display for SimpleCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Why a command line could not be split with confidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparseable(pub String);

impl fmt::Display for Unparseable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The word a command substitution leaves in its enclosing command.
pub const SUBSTITUTION: &str = "$(…)";

/// Reserved words that may start a command and precede another one.
const LEADING_KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac",
];

/// Builtins that run their arguments (or a later string) as shell code.
const SHELL_CODE_BUILTINS: &[&str] = &["eval", ".", "source", "trap", "alias"];

/// Builtins that start the program named by their next word.
const PROGRAM_WRAPPERS: &[&str] = &["exec", "command"];

/// Split `line` into the simple commands it runs, in order of appearance
/// (a command substitution comes before the command that contains it).
pub fn split(line: &str) -> Result<Vec<SimpleCommand>, Unparseable> {
    let chars: Vec<char> = line.chars().collect();
    let mut parser = Parser::new(&chars, 0);
    parser.sequence(false)?;
    if parser.commands.is_empty() {
        return Err(Unparseable("the command line is empty".into()));
    }
    Ok(parser.commands)
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
    commands: Vec<SimpleCommand>,
    /// How many command substitutions enclose what is read.
    nesting: usize,
}

/// The command being read.
#[derive(Default)]
struct Current {
    words: Vec<String>,
    word: String,
    /// Whether `word` has started (an empty quoted string is a word).
    in_word: bool,
    /// Whether `word` so far came only from unquoted digits (a descriptor
    /// number before a redirection, as in `2>`).
    digits_only: bool,
    /// Whether a word or a redirection was read since the last separator.
    started: bool,
    /// Why this command is in doubt, if it is.
    doubt: Option<String>,
}

impl Current {
    fn push_char(&mut self, c: char, quoted: bool) {
        if !self.in_word {
            self.in_word = true;
            self.started = true;
            self.digits_only = true;
        }
        if quoted || !c.is_ascii_digit() {
            self.digits_only = false;
        }
        self.word.push(c);
    }

    fn push_str(&mut self, s: &str) {
        self.touch();
        self.digits_only = false;
        self.word.push_str(s);
    }

    /// A command substitution: the word `$(…)`, and the command in doubt.
    fn push_substitution(&mut self) {
        self.push_str(SUBSTITUTION);
        self.doubt
            .get_or_insert_with(|| "it holds a command substitution".into());
    }

    /// Start a word that may be empty (`""`).
    fn touch(&mut self) {
        if !self.in_word {
            self.in_word = true;
            self.started = true;
            self.digits_only = false;
        }
    }

    fn end_word(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.word));
            self.in_word = false;
            self.digits_only = false;
        }
    }

    /// End the command: drop leading keywords and wrappers (in doubt), and
    /// record it unless it is empty.
    fn finish(
        &mut self,
        out: &mut Vec<SimpleCommand>,
        substituted: bool,
        open: &mut Vec<&'static str>,
    ) -> Result<(), Unparseable> {
        self.end_word();
        self.started = false;
        let mut words = std::mem::take(&mut self.words);
        let mut doubt = self.doubt.take();
        if substituted {
            doubt.get_or_insert_with(|| "it runs inside a command substitution".into());
        }
        while let Some(first) = words.first().map(String::as_str) {
            if first == "case" {
                return Err(Unparseable("a `case` statement".into()));
            }
            if first == "for" {
                doubt.get_or_insert_with(|| "a `for` loop".into());
                open.push("done");
                break;
            }
            if !LEADING_KEYWORDS.contains(&first) {
                break;
            }
            match_keyword(first, open, words.len() > 1)?;
            doubt.get_or_insert_with(|| format!("it follows the shell keyword `{first}`"));
            words.remove(0);
        }
        let assignments = words.iter().take_while(|w| is_assignment(w)).count();
        while let Some(program) = words.get(assignments).map(String::as_str) {
            if SHELL_CODE_BUILTINS.contains(&program) {
                doubt.get_or_insert_with(|| format!("`{program}` runs text as shell code"));
                break;
            }
            let next_is_program = words
                .get(assignments + 1)
                .is_some_and(|next| !next.starts_with('-'));
            if !PROGRAM_WRAPPERS.contains(&program) {
                break;
            }
            doubt.get_or_insert_with(|| format!("`{program}` starts another program"));
            if !next_is_program {
                break;
            }
            words.remove(assignments);
        }
        if !words.is_empty() {
            out.push(SimpleCommand { words, doubt });
        }
        Ok(())
    }
}

/// Keep the stack of the closing words the open compound commands expect
/// (`fi`, `done`, `}`) in step with `keyword`; refuse what sh would reject
/// (a stray `}`, `then` outside an `if`, words after `fi`).
fn match_keyword(
    keyword: &str,
    open: &mut Vec<&'static str>,
    more_words: bool,
) -> Result<(), Unparseable> {
    let expects = |closer: &str| open.last() == Some(&closer);
    let ok = match keyword {
        "if" => {
            open.push("fi");
            true
        }
        "while" | "until" => {
            open.push("done");
            true
        }
        "{" => {
            open.push("}");
            true
        }
        "then" | "else" | "elif" => expects("fi"),
        "do" => expects("done"),
        "fi" | "done" | "}" => {
            let matched = expects(keyword) && !more_words;
            open.pop();
            matched
        }
        "!" => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Unparseable(format!(
            "a misplaced shell keyword `{keyword}`"
        )))
    }
}

impl<'a> Parser<'a> {
    fn new(chars: &'a [char], nesting: usize) -> Parser<'a> {
        Parser {
            chars,
            pos: 0,
            commands: Vec::new(),
            nesting,
        }
    }

    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, Unparseable> {
        Err(Unparseable(what.to_string()))
    }

    fn finish(
        &mut self,
        cur: &mut Current,
        open: &mut Vec<&'static str>,
    ) -> Result<(), Unparseable> {
        cur.finish(&mut self.commands, self.nesting > 0, open)
    }

    /// Read commands until the end of input or, inside `$( )`, the closing
    /// parenthesis (consumed).
    fn sequence(&mut self, in_substitution: bool) -> Result<(), Unparseable> {
        let mut cur = Current::default();
        // Open sub-shell parentheses.
        let mut depth = 0usize;
        // After `|`, `&&` or `||`: a command must follow.
        let mut need_command = false;
        // Right after a sub-shell's `)`: only operators and redirections.
        let mut closed = false;
        // Whether a command was read since the last `(`.
        let mut filled = true;
        // The closing keywords the open compound commands expect, and how
        // many were open at each open `(`.
        let mut open: Vec<&'static str> = Vec::new();
        let mut open_at_paren: Vec<usize> = Vec::new();
        while let Some(c) = self.peek(0) {
            let word_char = (cur.in_word || c != '#')
                && !matches!(
                    c,
                    ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
                );
            if word_char && closed {
                return self.fail("a word after a sub-shell's `)`");
            }
            match c {
                ' ' | '\t' => {
                    cur.end_word();
                    self.pos += 1;
                }
                '\n' => {
                    if cur.started {
                        filled = true;
                    }
                    self.finish(&mut cur, &mut open)?;
                    closed = false;
                    self.pos += 1;
                }
                ';' | '&' | '|' => {
                    let double = c != ';' && self.peek(1) == Some(c);
                    let op: String = if double {
                        [c, c].iter().collect()
                    } else {
                        c.to_string()
                    };
                    if !cur.started && !closed {
                        return Err(Unparseable(format!("`{op}` without a command before it")));
                    }
                    filled = true;
                    self.finish(&mut cur, &mut open)?;
                    self.pos += op.len();
                    need_command = c == '|' || double;
                    closed = false;
                }
                '#' if !cur.in_word => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '(' => {
                    if cur.started || closed {
                        return self.fail(
                            "a `(` inside a command (a function definition, or not valid sh)",
                        );
                    }
                    depth += 1;
                    open_at_paren.push(open.len());
                    filled = false;
                    self.pos += 1;
                }
                ')' => {
                    if need_command {
                        return self.fail("a `|`, `&&` or `||` without a command after it");
                    }
                    if cur.started {
                        filled = true;
                    }
                    self.finish(&mut cur, &mut open)?;
                    self.pos += 1;
                    if depth == 0 {
                        if in_substitution {
                            if let Some(closer) = open.last() {
                                return Err(Unparseable(format!(
                                    "a compound command without its `{closer}`"
                                )));
                            }
                            return Ok(());
                        }
                        return self.fail("unbalanced `)`");
                    }
                    if !filled {
                        return self.fail("an empty `( )`");
                    }
                    if open_at_paren.pop() != Some(open.len()) {
                        return self.fail("a compound command that is not closed inside `( )`");
                    }
                    depth -= 1;
                    closed = true;
                }
                '\\' => {
                    self.pos += 1;
                    match self.peek(0) {
                        None => return self.fail("a trailing backslash"),
                        // Line continuation.
                        Some('\n') => self.pos += 1,
                        Some(escaped) => {
                            cur.push_char(escaped, true);
                            self.pos += 1;
                        }
                    }
                }
                '\'' => {
                    self.pos += 1;
                    cur.touch();
                    loop {
                        match self.peek(0) {
                            None => return self.fail("an unterminated single quote"),
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(q) => {
                                cur.push_char(q, true);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    self.double_quoted(&mut cur)?;
                }
                '`' => {
                    self.pos += 1;
                    self.backticks(false)?;
                    cur.push_substitution();
                }
                '$' => self.dollar(&mut cur, false)?,
                '<' | '>' => {
                    if cur.in_word && !cur.digits_only {
                        // `a>b`: the word ends where the operator starts.
                        cur.end_word();
                    } else if cur.in_word {
                        // `2>`: the digits name the descriptor.
                        cur.word.clear();
                        cur.in_word = false;
                        cur.digits_only = false;
                    }
                    self.redirection()?;
                    cur.started = true;
                }
                '\0' => return self.fail("a NUL character"),
                other => {
                    cur.push_char(other, false);
                    self.pos += 1;
                }
            }
            if cur.started {
                need_command = false;
            }
        }
        if cur.started {
            filled = true;
        }
        self.finish(&mut cur, &mut open)?;
        if need_command {
            return self.fail("a `|`, `&&` or `||` without a command after it");
        }
        if in_substitution {
            return self.fail("an unterminated `$(`");
        }
        if depth > 0 || !filled {
            return self.fail("an unbalanced `(`");
        }
        if let Some(closer) = open.last() {
            return Err(Unparseable(format!(
                "a compound command without its `{closer}`"
            )));
        }
        Ok(())
    }

    /// At a `$` (unquoted or inside double quotes).
    fn dollar(&mut self, cur: &mut Current, quoted: bool) -> Result<(), Unparseable> {
        match self.peek(1) {
            Some('(') => {
                if self.peek(2) == Some('(') {
                    return self.fail("arithmetic expansion `$((`");
                }
                self.pos += 2;
                self.nesting += 1;
                let inner = self.sequence(true);
                self.nesting -= 1;
                inner?;
                cur.push_substitution();
            }
            Some('{') => self.braced_parameter(cur)?,
            Some('\'' | '"') if !quoted => {
                return self.fail("`$'...'` / `$\"...\"` quoting");
            }
            _ => {
                cur.push_char('$', quoted);
                self.pos += 1;
            }
        }
        Ok(())
    }

    /// At `${`: only a plain parameter (`${HOME}`, `${1}`, `${#}`) is read;
    /// operators (`${x:-word}`) can hide quotes and substitutions.
    fn braced_parameter(&mut self, cur: &mut Current) -> Result<(), Unparseable> {
        let start = self.pos;
        let mut end = start + 2;
        while self.chars.get(end).is_some_and(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '*' | '#' | '?' | '$' | '!' | '-')
        }) {
            end += 1;
        }
        if end == start + 2 || self.chars.get(end) != Some(&'}') {
            return self.fail("a `${...}` expansion with an operator");
        }
        let text: String = self.chars[start..=end].iter().collect();
        cur.push_str(&text);
        self.pos = end + 1;
        Ok(())
    }

    /// After an opening `"`: up to the closing quote.
    fn double_quoted(&mut self, cur: &mut Current) -> Result<(), Unparseable> {
        cur.touch();
        loop {
            match self.peek(0) {
                None => return self.fail("an unterminated double quote"),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => {
                    match self.peek(1) {
                        None => return self.fail("an unterminated double quote"),
                        Some('\n') => {}
                        Some(e @ ('$' | '`' | '"' | '\\')) => cur.push_char(e, true),
                        Some(other) => {
                            cur.push_char('\\', true);
                            cur.push_char(other, true);
                        }
                    }
                    self.pos += 2;
                }
                Some('`') => {
                    self.pos += 1;
                    self.backticks(true)?;
                    cur.push_substitution();
                }
                Some('$') => self.dollar(cur, true)?,
                Some('\0') => return self.fail("a NUL character"),
                Some(c) => {
                    cur.push_char(c, true);
                    self.pos += 1;
                }
            }
        }
    }

    /// After an opening backtick: up to the closing one; the text between
    /// (with `` \` ``, `\\`, `\$`, and inside double quotes `\"`, unescaped)
    /// is split on its own.
    fn backticks(&mut self, in_double_quotes: bool) -> Result<(), Unparseable> {
        let mut inner = Vec::new();
        loop {
            match self.peek(0) {
                None => return self.fail("an unterminated backtick"),
                Some('`') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    match self.peek(1) {
                        None => return self.fail("an unterminated backtick"),
                        Some(e @ ('`' | '\\' | '$')) => inner.push(e),
                        Some('"') if in_double_quotes => inner.push('"'),
                        Some(other) => {
                            inner.push('\\');
                            inner.push(other);
                        }
                    }
                    self.pos += 2;
                }
                Some(c) => {
                    inner.push(c);
                    self.pos += 1;
                }
            }
        }
        let mut nested = Parser::new(&inner, self.nesting + 1);
        nested
            .sequence(false)
            .map_err(|e| Unparseable(format!("{e} inside backticks")))?;
        self.commands.append(&mut nested.commands);
        Ok(())
    }

    /// At `<` or `>` (after any descriptor number): accept descriptor
    /// duplications and `/dev/null`, refuse the rest.
    fn redirection(&mut self) -> Result<(), Unparseable> {
        let first = self.peek(0).expect("at an operator");
        self.pos += 1;
        match (first, self.peek(0)) {
            ('<', Some('<')) => return self.fail("a here-document or here-string (`<<`)"),
            (_, Some('(')) => return self.fail("process substitution (`<(` / `>(`)"),
            ('>', Some('>' | '|')) | ('<', Some('>')) => self.pos += 1,
            (_, Some('&')) => {
                // `>&2`, `2>&1`, `<&0`, `>&-`: between descriptors.
                self.pos += 1;
                let start = self.pos;
                while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                if self.pos > start {
                    if self.peek(0) == Some('-') {
                        self.pos += 1;
                    }
                    return self.after_redirection();
                }
                if self.peek(0) == Some('-') {
                    self.pos += 1;
                    return self.after_redirection();
                }
                // `>&file` is not POSIX (dash: "Bad fd number").
                return self.fail("a `>&` or `<&` not followed by a descriptor number");
            }
            _ => {}
        }
        let target = self.redirection_target()?;
        if target == "/dev/null" {
            return self.after_redirection();
        }
        Err(Unparseable(format!(
            "a redirection to or from a file (`{first} {target}`)"
        )))
    }

    /// The operator must be followed by a word boundary.
    fn after_redirection(&mut self) -> Result<(), Unparseable> {
        match self.peek(0) {
            None | Some(' ' | '\t' | '\n' | ';' | '&' | '|' | ')') => Ok(()),
            Some(_) => self.fail("an unusual redirection"),
        }
    }

    /// The word after a redirection operator, quotes removed; anything but
    /// plain text (a substitution, a variable) makes it unknown.
    fn redirection_target(&mut self) -> Result<String, Unparseable> {
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.pos += 1;
        }
        let mut target = String::new();
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\'' => {
                    self.pos += 1;
                    loop {
                        match self.peek(0) {
                            None => return self.fail("an unterminated single quote"),
                            Some('\'') => break,
                            Some(q) => target.push(q),
                        }
                        self.pos += 1;
                    }
                    self.pos += 1;
                }
                '"' | '`' | '$' | '\\' | '\0' => {
                    return self.fail("a redirection to a computed file name")
                }
                other => {
                    target.push(other);
                    self.pos += 1;
                }
            }
        }
        if target.is_empty() {
            return self.fail("a redirection without a target");
        }
        Ok(target)
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        split(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .iter()
            .map(SimpleCommand::text)
            .collect()
    }

    fn refused(line: &str) -> String {
        match split(line) {
            Ok(c) => panic!("{line:?} was split into {c:?}"),
            Err(e) => e.0,
        }
    }

    /// The texts of the commands in doubt.
    fn doubted(line: &str) -> Vec<String> {
        split(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .iter()
            .filter(|c| c.doubt.is_some())
            .map(SimpleCommand::text)
            .collect()
    }

    #[test]
    fn simple_commands() {
        assert_eq!(texts("cargo test -p x"), ["cargo test -p x"]);
        assert_eq!(texts("  cargo   test\t-p  x  "), ["cargo test -p x"]);
        assert_eq!(
            split("ls -l").unwrap(),
            vec![SimpleCommand {
                words: vec!["ls".into(), "-l".into()],
                doubt: None,
            }]
        );
        // A carriage return is not a blank to sh.
        assert_eq!(split("ls\r").unwrap()[0].words, ["ls\r"]);
    }

    #[test]
    fn separators() {
        assert_eq!(texts("cargo test && rm -rf x"), ["cargo test", "rm -rf x"]);
        assert_eq!(texts("a || b; c | d & f"), ["a", "b", "c", "d", "f"]);
        assert_eq!(texts("a\nb\n\nc"), ["a", "b", "c"]);
        assert_eq!(texts("a;b&&c||d|e"), ["a", "b", "c", "d", "e"]);
        assert_eq!(texts("sleep 1 &"), ["sleep 1"]);
        assert_eq!(texts("a ; "), ["a"]);
        assert_eq!(texts("a &&\n\n b"), ["a", "b"]);
        // `&>` is `&` then `>` in POSIX sh.
        assert_eq!(texts("ls &>/dev/null rm x"), ["ls", "rm x"]);
        assert_eq!(texts("cmd &>/dev/null"), ["cmd"]);
    }

    #[test]
    fn comments() {
        assert_eq!(texts("cargo test # ok; rm x"), ["cargo test"]);
        assert_eq!(texts("ls #'\nrm x\n#'"), ["ls", "rm x"]);
        assert_eq!(texts("ls #\"\nrm x\n#\""), ["ls", "rm x"]);
        assert_eq!(texts("ls # \\\nrm x"), ["ls", "rm x"]);
        assert_eq!(texts("ls;#x\nrm y"), ["ls", "rm y"]);
        assert_eq!(texts("(ls)#x\nrm y"), ["ls", "rm y"]);
        // Inside a word, `#` is text.
        assert_eq!(texts("echo a#b $# '#'c"), ["echo a#b $# #c"]);
        assert_eq!(texts("ls \\\n#x\nrm y"), ["ls", "rm y"]);
        assert_eq!(texts("ls\\\n#x"), ["ls#x"]);
        assert!(refused("# only a comment").contains("empty"));
    }

    #[test]
    fn subshells_and_substitutions() {
        assert_eq!(texts("(cd x && rm y)"), ["cd x", "rm y"]);
        assert_eq!(texts("(a; (b)) && c"), ["a", "b", "c"]);
        assert_eq!(
            texts("echo $(rm -rf x) done"),
            ["rm -rf x", "echo $(…) done"]
        );
        assert_eq!(texts("echo `whoami`"), ["whoami", "echo $(…)"]);
        assert_eq!(
            texts("git commit -m \"$(date) `id`\""),
            ["date", "id", "git commit -m $(…) $(…)"]
        );
        assert_eq!(texts("a $(b $(c) | d)"), ["c", "b $(…)", "d", "a $(…)"]);
        assert_eq!(texts("x $( (a; b) )"), ["a", "b", "x $(…)"]);
        assert_eq!(
            texts("echo `echo \\`id\\``"),
            ["id", "echo $(…)", "echo $(…)"]
        );
        assert_eq!(
            texts("echo \"`echo \\\"a b\\\"`\""),
            ["echo a b", "echo $(…)"]
        );
        // Every command of a substitution, and its holder, is in doubt.
        assert_eq!(
            doubted("ls; echo $(rm -rf x) done"),
            ["rm -rf x", "echo $(…) done"]
        );
        assert_eq!(doubted("echo `id`"), ["id", "echo $(…)"]);
        // Quoted parentheses and operators are text.
        assert_eq!(
            texts("echo '$(rm x)' \"a && b\" 'c;d'"),
            ["echo $(rm x) a && b c;d"]
        );
        assert!(doubted("echo '$(rm x)'").is_empty());
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        assert_eq!(texts("\"rm\" -rf x"), ["rm -rf x"]);
        assert_eq!(texts("r''m -rf x"), ["rm -rf x"]);
        assert_eq!(texts("r\\m -rf x"), ["rm -rf x"]);
        assert_eq!(texts("echo a\\;b"), ["echo a;b"]);
        assert_eq!(texts("echo \"a\\\"b\" 'c\\d'"), ["echo a\"b c\\d"]);
        assert_eq!(texts("echo \"\\n\""), ["echo \\n"]);
        assert_eq!(
            split("printf '' x").unwrap()[0].words,
            vec!["printf".to_string(), String::new(), "x".to_string()]
        );
        assert_eq!(texts("cargo \\\n  test"), ["cargo test"]);
        assert_eq!(
            texts("echo $HOME ${USER} \"${1}\""),
            ["echo $HOME ${USER} ${1}"]
        );
    }

    #[test]
    fn harmless_redirections_are_dropped() {
        assert_eq!(texts("cargo test 2>&1"), ["cargo test"]);
        assert_eq!(
            texts("cargo test 2>&1 | tail -5"),
            ["cargo test", "tail -5"]
        );
        assert_eq!(texts("echo hi >&2"), ["echo hi"]);
        assert_eq!(texts("cmd > /dev/null 2>/dev/null"), ["cmd"]);
        assert_eq!(texts("cmd </dev/null"), ["cmd"]);
        assert_eq!(texts("cmd 3>&-"), ["cmd"]);
        assert_eq!(texts("(cmd) >/dev/null"), ["cmd"]);
        // Digits that are an argument, not a descriptor.
        assert_eq!(texts("echo 2 >&2"), ["echo 2"]);
        assert_eq!(texts("echo a2>&2"), ["echo a2"]);
    }

    #[test]
    fn keywords_and_wrappers_are_removed_in_doubt() {
        assert_eq!(texts("if true; then rm -rf x; fi"), ["true", "rm -rf x"]);
        assert_eq!(doubted("if true; then rm -rf x; fi"), ["true", "rm -rf x"]);
        assert_eq!(texts("! rm x"), ["rm x"]);
        assert_eq!(texts("{ ls; rm x; }"), ["ls", "rm x"]);
        assert_eq!(doubted("{ ls; rm x; }"), ["ls"]);
        assert_eq!(texts("while ls; do rm x; done"), ["ls", "rm x"]);
        assert_eq!(
            doubted("for f in a b; do rm $f; done"),
            ["for f in a b", "rm $f"]
        );
        assert_eq!(texts("exec rm x"), ["rm x"]);
        assert_eq!(doubted("command rm x"), ["rm x"]);
        assert_eq!(doubted("command -v ls"), ["command -v ls"]);
        for code in [
            "eval 'rm x'",
            ". ./script",
            "trap 'rm x' EXIT",
            "alias ls='rm x'",
        ] {
            assert_eq!(doubted(code).len(), 1, "{code}");
        }
        // Assignments stay words; the program follows them.
        assert_eq!(texts("FOO=1 cargo test"), ["FOO=1 cargo test"]);
        assert!(doubted("FOO=1 cargo test").is_empty());
        assert_eq!(
            split("FOO=1 cargo test").unwrap()[0].program(),
            Some("cargo")
        );
        assert_eq!(split("A=1 B=2").unwrap()[0].program(), None);
        assert_eq!(doubted("A=1 eval x"), ["A=1 eval x"]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(refused("echo 'unterminated").contains("single quote"));
        assert!(refused("echo \"unterminated").contains("double quote"));
        assert!(refused("echo `x").contains("backtick"));
        assert!(refused("echo $(x").contains("unterminated `$(`"));
        assert!(refused("(a").contains("unbalanced `(`"));
        assert!(refused("a)").contains("unbalanced `)`"));
        assert!(refused("()").contains("empty `( )`"));
        assert!(refused("f() { rm x; }; f").contains("function definition"));
        assert!(refused("echo (a)").contains("`(` inside a command"));
        assert!(refused("(a) b").contains("after a sub-shell"));
        assert!(refused("{ls; rm x;}").contains("misplaced shell keyword `}`"));
        assert!(refused("then rm x").contains("misplaced"));
        assert!(refused("if a; then b; fi c").contains("misplaced"));
        assert!(refused("if a; then b").contains("without its `fi`"));
        assert!(refused("(if a; then b) ; fi").contains("not closed inside"));
        assert!(refused("x $(while a; do b)").contains("without its `done`"));
        assert!(refused("ls 2>&1>/dev/null").contains("unusual redirection"));
        assert!(refused("echo x\\").contains("trailing backslash"));
        assert!(refused("a;;b").contains("`;` without a command"));
        assert!(refused("a |& b").contains("`&` without a command"));
        assert!(refused("; a").contains("`;` without a command"));
        assert!(refused("a && && b").contains("`&&` without a command"));
        assert!(refused("a |").contains("without a command after it"));
        assert!(refused("a ||\n").contains("without a command after it"));
        assert!(refused("cat <<EOF\nhi\nEOF").contains("here-document"));
        assert!(refused("cat <<< hi").contains("here-"));
        assert!(refused("diff <(ls a) <(ls b)").contains("process substitution"));
        assert!(refused("tee >(cat)").contains("process substitution"));
        assert!(refused("echo $((1+2))").contains("arithmetic"));
        assert!(refused("echo ${x:-$(rm y)}").contains("`${...}`"));
        assert!(refused("echo \"${x:-'}'}\"").contains("`${...}`"));
        assert!(refused("echo hi > out.txt").contains("out.txt"));
        assert!(refused("echo hi >>log").contains("log"));
        assert!(refused("cmd 2> err.txt").contains("err.txt"));
        assert!(refused("cmd &> all.txt").contains("all.txt"));
        assert!(refused("cmd >& all.txt").contains("descriptor number"));
        assert!(refused("cmd >&/dev/null rm x").contains("descriptor number"));
        assert!(refused("sort < input").contains("input"));
        assert!(refused("echo x > \"$F\"").contains("computed"));
        assert!(refused("echo x >").contains("without a target"));
        assert!(refused("echo `a '`").contains("inside backticks"));
        assert!(refused("").contains("empty"));
        assert!(refused(" \n\n").contains("empty"));
        assert!(refused("case x in a) echo;; esac").contains("case"));
        assert!(refused("case x in *) rm y; esac").contains("case"));
        assert!(refused("case x in\n*) rm y\nesac").contains("case"));
        assert!(refused("echo $'\\x72m'").contains("quoting"));
        assert!(refused("ls\0rm").contains("NUL"));
        for computed in [
            "$CMD -rf x",
            "$(echo rm) -rf x",
            "`echo rm` x",
            "r{m,} -rf x",
            "r* -rf x",
            "X=$(id) ${RM} x",
            "ls; /bin/r?",
        ] {
            let commands = split(computed).unwrap();
            assert!(
                commands.iter().any(|c| c.computed_program().is_some()),
                "{computed}: {commands:?}"
            );
        }
        // A computed argument is fine.
        assert!(split("echo $X")
            .unwrap()
            .iter()
            .all(|c| c.computed_program().is_none()));
    }
}
