//! Split a shell command line into the simple commands it would run.
//!
//! The splitter is deliberately conservative: it understands enough of the
//! POSIX shell grammar to find every command a line starts, and refuses
//! (returns an error, which the policy turns into `ask`) whatever it cannot
//! read with confidence.
//!
//! - Separators: `&&`, `||`, `;`, `|` (and `|&`), `&`, newlines, and the
//!   parentheses of sub-shells `( ... )`.
//! - Command substitutions `$( ... )` and `` `...` `` (also inside double
//!   quotes) are commands of their own; in the enclosing command they stand
//!   as the word `$(…)`.
//! - Quotes (`'...'`, `"..."`) and backslash escapes are removed, so `"rm"`
//!   and `r\m` are both the word `rm`. `$VAR` and `${VAR}` stay as written.
//! - Redirections between descriptors (`2>&1`, `>&2`, `<&0`, `2>&-`) and to
//!   or from `/dev/null` are dropped from the words.
//!
//! Refused: unbalanced quotes, parentheses or backticks; a trailing
//! backslash; here-documents and here-strings (`<<`, `<<<`); process
//! substitution (`<(`, `>(`); arithmetic `$(( ))`; `$'...'` and `$"..."`
//! quoting; redirections to or from any file other than `/dev/null` (a
//! write the file rules would not see); an empty line.
//!
//! A command whose program name is computed (`$CMD x`, `$(echo rm) x`,
//! `{ a; }`, `r{m,} x`) is split like any other; see
//! [`SimpleCommand::computed_program`].
//!
//! Not interpreted (they stay ordinary words, so a rule must match them
//! literally): keywords (`if`, `then`, `for` ...), variable assignments
//! (`FOO=1 cargo test`), `#` comments, globs in arguments. Wrappers such as
//! `sh -c`, `bash -c`, `eval`, `env`, `xargs` or `find -exec` run what they
//! are given: a rule that allows them allows whatever they run.

use std::fmt;

/// One simple command: its words, quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The words, e.g. `["cargo", "test", "-p", "x"]`.
    pub words: Vec<String>,
}

impl SimpleCommand {
    /// The words joined by single spaces: what rules are matched against.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// The program name when it is computed at run time, so that no pattern
    /// can tell what runs: it holds `$` (a variable or a substitution),
    /// braces, parentheses, backticks or glob characters (`$CMD x`,
    /// `$(echo rm) x`, `{ a; }`, `r{m,} x`, `/bin/r?`).
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

/// Split `line` into the simple commands it runs, in order of appearance
/// (a command substitution comes before the command that contains it).
pub fn split(line: &str) -> Result<Vec<SimpleCommand>, Unparseable> {
    let chars: Vec<char> = line.chars().collect();
    let mut parser = Parser {
        chars: &chars,
        pos: 0,
        commands: Vec::new(),
    };
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
}

impl Current {
    fn push_char(&mut self, c: char, quoted: bool) {
        if !self.in_word {
            self.in_word = true;
            self.digits_only = true;
        }
        if quoted || !c.is_ascii_digit() {
            self.digits_only = false;
        }
        self.word.push(c);
    }

    fn push_str(&mut self, s: &str) {
        if !self.in_word {
            self.in_word = true;
        }
        self.digits_only = false;
        self.word.push_str(s);
    }

    /// Start a word that may be empty (`""`).
    fn touch(&mut self) {
        if !self.in_word {
            self.in_word = true;
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

    fn finish(&mut self, out: &mut Vec<SimpleCommand>) {
        self.end_word();
        if !self.words.is_empty() {
            out.push(SimpleCommand {
                words: std::mem::take(&mut self.words),
            });
        }
    }
}

impl Parser<'_> {
    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, Unparseable> {
        Err(Unparseable(what.to_string()))
    }

    /// Read commands until the end of input or, inside `$( )`, the closing
    /// parenthesis (consumed).
    fn sequence(&mut self, in_substitution: bool) -> Result<(), Unparseable> {
        let mut cur = Current::default();
        let mut depth = 0usize; // open sub-shell parentheses
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\r' => {
                    cur.end_word();
                    self.pos += 1;
                }
                '\n' | ';' | '&' | '|' => {
                    if c == '&' && self.peek(1) == Some('>') {
                        // `&>file`, `&>>file`: both streams to a file.
                        cur.end_word();
                        self.pos += 1;
                        self.redirection(&mut cur)?;
                        continue;
                    }
                    cur.finish(&mut self.commands);
                    self.pos += 1;
                }
                '(' => {
                    cur.finish(&mut self.commands);
                    depth += 1;
                    self.pos += 1;
                }
                ')' => {
                    cur.finish(&mut self.commands);
                    self.pos += 1;
                    if depth == 0 {
                        if in_substitution {
                            return Ok(());
                        }
                        return self.fail("unbalanced `)`");
                    }
                    depth -= 1;
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
                    self.backticks()?;
                    cur.push_str(SUBSTITUTION);
                }
                '$' if self.peek(1) == Some('(') => {
                    self.dollar_paren()?;
                    cur.push_str(SUBSTITUTION);
                }
                '$' if matches!(self.peek(1), Some('\'' | '"')) => {
                    return self.fail("`$'...'` / `$\"...\"` quoting");
                }
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
                    self.redirection(&mut cur)?;
                }
                other => {
                    cur.push_char(other, false);
                    self.pos += 1;
                }
            }
        }
        cur.finish(&mut self.commands);
        if in_substitution {
            return self.fail("an unterminated `$(`");
        }
        if depth > 0 {
            return self.fail("an unbalanced `(`");
        }
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
                    self.backticks()?;
                    cur.push_str(SUBSTITUTION);
                }
                Some('$') if self.peek(1) == Some('(') => {
                    self.dollar_paren()?;
                    cur.push_str(SUBSTITUTION);
                }
                Some(c) => {
                    cur.push_char(c, true);
                    self.pos += 1;
                }
            }
        }
    }

    /// At `$(`: a command substitution (its commands are recorded).
    fn dollar_paren(&mut self) -> Result<(), Unparseable> {
        if self.peek(2) == Some('(') {
            return self.fail("arithmetic expansion `$((`");
        }
        self.pos += 2;
        self.sequence(true)
    }

    /// After an opening backtick: up to the closing one; the text between
    /// (with `` \` ``, `\\` and `\$` unescaped) is split on its own.
    fn backticks(&mut self) -> Result<(), Unparseable> {
        let mut inner = String::new();
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
        let mut nested = split(&inner).map_err(|e| Unparseable(format!("{e} inside backticks")))?;
        self.commands.append(&mut nested);
        Ok(())
    }

    /// At `<` or `>` (after any descriptor number): accept descriptor
    /// duplications and `/dev/null`, refuse the rest.
    fn redirection(&mut self, cur: &mut Current) -> Result<(), Unparseable> {
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
                    return self.after_redirection(cur);
                }
                if self.peek(0) == Some('-') {
                    self.pos += 1;
                    return self.after_redirection(cur);
                }
                // `>&file` is `&>file`: a file target follows.
            }
            _ => {}
        }
        let target = self.redirection_target()?;
        if target == "/dev/null" {
            return self.after_redirection(cur);
        }
        Err(Unparseable(format!(
            "a redirection to or from a file (`{first} {target}`)"
        )))
    }

    /// The operator must be followed by a word boundary.
    fn after_redirection(&mut self, _cur: &mut Current) -> Result<(), Unparseable> {
        match self.peek(0) {
            None | Some(' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | ')' | '<' | '>') => Ok(()),
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
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
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
                '"' | '`' | '$' | '\\' => {
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

    #[test]
    fn simple_commands() {
        assert_eq!(texts("cargo test -p x"), ["cargo test -p x"]);
        assert_eq!(texts("  cargo   test\t-p  x  "), ["cargo test -p x"]);
        assert_eq!(
            split("ls -l").unwrap(),
            vec![SimpleCommand {
                words: vec!["ls".into(), "-l".into()]
            }]
        );
    }

    #[test]
    fn separators() {
        assert_eq!(texts("cargo test && rm -rf x"), ["cargo test", "rm -rf x"]);
        assert_eq!(
            texts("a || b; c | d |& e & f"),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(texts("a\nb\n\nc"), ["a", "b", "c"]);
        assert_eq!(texts("a;b&&c||d|e"), ["a", "b", "c", "d", "e"]);
        assert_eq!(texts("a;;b"), ["a", "b"]);
        assert_eq!(texts("sleep 1 &"), ["sleep 1"]);
        assert_eq!(texts("a ; "), ["a"]);
    }

    #[test]
    fn subshells_and_substitutions() {
        assert_eq!(texts("(cd x && rm y)"), ["cd x", "rm y"]);
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
        // Quoted parentheses and operators are text.
        assert_eq!(
            texts("echo '$(rm x)' \"a && b\" 'c;d'"),
            ["echo $(rm x) a && b c;d"]
        );
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
        assert_eq!(texts("echo $HOME ${USER}"), ["echo $HOME ${USER}"]);
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
        assert_eq!(texts("cmd &>/dev/null"), ["cmd"]);
        assert_eq!(texts("cmd </dev/null"), ["cmd"]);
        assert_eq!(texts("cmd 3>&-"), ["cmd"]);
        // Digits that are an argument, not a descriptor.
        assert_eq!(texts("echo 2 >&2"), ["echo 2"]);
        assert_eq!(texts("echo a2>&2"), ["echo a2"]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(refused("echo 'unterminated").contains("single quote"));
        assert!(refused("echo \"unterminated").contains("double quote"));
        assert!(refused("echo `x").contains("backtick"));
        assert!(refused("echo $(x").contains("unterminated `$(`"));
        assert!(refused("(a").contains("unbalanced `(`"));
        assert!(refused("a)").contains("unbalanced `)`"));
        assert!(refused("echo x\\").contains("trailing backslash"));
        assert!(refused("cat <<EOF\nhi\nEOF").contains("here-document"));
        assert!(refused("cat <<< hi").contains("here-"));
        assert!(refused("diff <(ls a) <(ls b)").contains("process substitution"));
        assert!(refused("tee >(cat)").contains("process substitution"));
        assert!(refused("echo $((1+2))").contains("arithmetic"));
        assert!(refused("echo hi > out.txt").contains("out.txt"));
        assert!(refused("echo hi >>log").contains("log"));
        assert!(refused("cmd 2> err.txt").contains("err.txt"));
        assert!(refused("cmd &> all.txt").contains("all.txt"));
        assert!(refused("cmd >& all.txt").contains("all.txt"));
        assert!(refused("sort < input").contains("input"));
        assert!(refused("echo x > \"$F\"").contains("computed"));
        assert!(refused("echo x >").contains("without a target"));
        assert!(refused("echo `a '`").contains("inside backticks"));
        assert!(refused("").contains("empty"));
        assert!(refused(" ;; \n").contains("empty"));
        assert!(refused("case x in a) echo;; esac").contains("`)`"));
        assert!(refused("echo $'\\x72m'").contains("quoting"));
        for computed in [
            "$CMD -rf x",
            "$(echo rm) -rf x",
            "`echo rm` x",
            "{ a; b; }",
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
        assert_eq!(texts("echo $(id) $X"), ["id", "echo $(…) $X"]);
        assert!(split("echo $(id) $X")
            .unwrap()
            .iter()
            .all(|c| c.computed_program().is_none()));
    }

    #[test]
    fn keywords_and_assignments_stay_words() {
        assert_eq!(
            texts("if true; then rm -rf x; fi"),
            ["if true", "then rm -rf x", "fi"]
        );
        assert_eq!(texts("FOO=1 cargo test"), ["FOO=1 cargo test"]);
        assert_eq!(
            split("FOO=1 cargo test").unwrap()[0].program(),
            Some("cargo")
        );
        assert_eq!(split("A=1 B=2").unwrap()[0].program(), None);
        // `#` is not treated as a comment: the rest still has to pass.
        assert_eq!(texts("cargo test # ok; rm x"), ["cargo test # ok", "rm x"]);
    }
}
