//! The built-in `script` step: runs a shell script through the host's
//! `process` interface.
//!
//! Config (`with:`, or the `run:` shorthand of a step):
//!
//! ```yaml
//! run: |            # required: the script, passed to `<shell> -e -c`
//!   echo "hello"
//!   echo "greeting=hi" >> "$WFHOST_OUTPUT"
//! shell: bash       # optional, default `sh`; must be in the step's `exec` grant
//! env: { NAME: x }  # optional extra environment variables
//! cwd: sub/dir      # optional working directory, relative to the workflow's
//! ```
//!
//! A script that is one plain command (`sleep 5`, `cargo test --release`,
//! `npm ci`: one line of words made of letters, digits and `_ . / : , + @
//! % = -`, the first a program name that is not a shell builtin or keyword,
//! nor an assignment) is started directly, without the shell, when the
//! step's `exec` grant names its program and `env` sets no `PATH`, as
//! `make` does: one program started instead of two, and the same result
//! (the shell would only look the name up on `PATH` and start it), except
//! that the program sees no `PWD` (a shell adds it) and a signal that ends
//! it is reported as that signal (a shell reports exit code 128+N). The
//! program must then be a binary or a script with a `#!` line. Anything
//! else, and every script when a `shell` is set, goes through the shell.
//!
//! The script sees `WFHOST_RUN_ID`, `WFHOST_STEP_ID`, `WFHOST_ATTEMPT`,
//! `WFHOST_IDEMPOTENCY_KEY` and (set by the host) `WFHOST_OUTPUT`. Every
//! stdout line goes to the step log at info level, every stderr line at warn,
//! as it is written (`process::run_streamed`).
//!
//! Output: `{ "exit_code": 0, "stdout": "...", "stderr": "..." }` (stdout and
//! stderr without their trailing line break) plus one field per line the
//! script wrote to `$WFHOST_OUTPUT`, GitHub-Actions style: `key=value`, or
//!
//! ```text
//! key<<EOF
//! several
//! lines
//! EOF
//! ```
//!
//! A `key=value` value written as a JSON number (in its plain form: `3`,
//! `-1.5`; not `1.10`, `007`, `1e3`), `true`/`false`, array or object is
//! typed (`n=3` gives the number 3); anything else is a string, as is every
//! `key<<EOF` value (the way to keep `3` a string).
//!
//! Errors: a non-zero exit (`script exited with code 3` and the last stderr
//! lines), a signal, a denied `exec`, a bad config or a malformed output line
//! are permanent; a timeout is transient.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use wfhost_sdk::process::{self, Command, Output, ProcessError};
use wfhost_sdk::{fs, Info, Plugin, Request, StepError};

/// How many trailing stderr lines a failure message quotes.
const STDERR_TAIL_LINES: usize = 10;

/// Output fields a `$WFHOST_OUTPUT` line may not set.
const RESERVED_KEYS: [&str; 3] = ["exit_code", "stdout", "stderr"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    run: String,
    #[serde(default = "default_shell")]
    shell: String,
    #[serde(default)]
    env: Map<String, Value>,
    #[serde(default)]
    cwd: Option<String>,
}

fn default_shell() -> String {
    "sh".to_string()
}

struct Script;

impl Plugin for Script {
    fn describe() -> Info {
        Info::new(
            "script",
            env!("CARGO_PKG_VERSION"),
            "Runs a shell script (`<shell> -e -c <run>`); output is its exit code, stdout, \
             stderr and the key=value lines it writes to $WFHOST_OUTPUT.",
        )
        .schema(json!({
            "type": "object",
            "required": ["run"],
            "additionalProperties": false,
            "properties": {
                "run": { "type": "string", "description": "The script, run with `<shell> -e -c`." },
                "shell": { "type": "string", "default": "sh", "description": "Shell program; must be granted in `exec`." },
                "env": {
                    "type": "object",
                    "description": "Extra environment variables.",
                    "additionalProperties": { "type": ["string", "number", "boolean"] }
                },
                "cwd": { "type": "string", "description": "Working directory, relative to the workflow's directory." }
            }
        }))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        let config: Config = req.parse_config()?;
        let plain = config
            .may_skip_shell()
            .then(|| plain_command(&config.run))
            .flatten();
        let out = match plain {
            // Not granted: the shell runs it, and says what is missing.
            Some(words) => match process::run_streamed(command(&req, &config, &words)?) {
                Err(ProcessError::Denied { .. }) => run_in_shell(&req, &config)?,
                other => other.map_err(|e| start_error(e, words[0]))?,
            },
            None => run_in_shell(&req, &config)?,
        };

        let stdout = out.stdout_text();
        let stderr = out.stderr_text();

        check_status(&out, &stderr)?;

        let mut output = Map::new();
        output.insert("exit_code".into(), json!(out.exit_code.unwrap_or(0)));
        output.insert("stdout".into(), json!(trim_line_break(&stdout)));
        output.insert("stderr".into(), json!(trim_line_break(&stderr)));
        if let Some(file) = &out.output_file {
            let text = String::from_utf8_lossy(file);
            for (key, value) in parse_output_file(&text).map_err(StepError::permanent)? {
                output.insert(key, value);
            }
        }
        Ok(Value::Object(output))
    }
}

wfhost_sdk::export_plugin!(Script);

impl Config {
    /// Whether a plain command may start without the shell: the default
    /// `sh` (no `shell` chosen), and no `PATH` of the script's own, which
    /// the shell would search instead of the host's.
    fn may_skip_shell(&self) -> bool {
        self.shell == default_shell() && !self.env.contains_key("PATH")
    }
}

/// Run the script with `<shell> -e -c`.
fn run_in_shell(req: &Request, config: &Config) -> Result<Output, StepError> {
    let words = [config.shell.as_str(), "-e", "-c", config.run.as_str()];
    process::run_streamed(command(req, config, &words)?).map_err(|e| start_error(e, &config.shell))
}

/// `words` (program, then arguments) with the script's environment and
/// working directory, and a `$WFHOST_OUTPUT` file.
fn command(req: &Request, config: &Config, words: &[&str]) -> Result<Command, StepError> {
    let mut cmd = Command::new(words[0])
        .args(words[1..].iter().copied())
        .capture_output_file(true);
    for (key, value) in &config.env {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => {
                return Err(StepError::permanent(format!(
                    "invalid config: env.{key} must be a string, number or boolean"
                )))
            }
        };
        cmd = cmd.env(key, value);
    }
    // Set last so a config `env` cannot spoof them.
    cmd = cmd
        .env("WFHOST_RUN_ID", &req.run_id)
        .env("WFHOST_STEP_ID", &req.step_id)
        .env("WFHOST_ATTEMPT", req.attempt.to_string())
        .env("WFHOST_IDEMPOTENCY_KEY", &req.idempotency_key);
    if let Some(cwd) = &config.cwd {
        cmd = cmd.cwd(fs::resolve(req, cwd));
    }
    Ok(cmd)
}

/// The step's error for `program` (the shell, or a plain command's
/// program) that could not be started.
fn start_error(error: ProcessError, program: &str) -> StepError {
    match error {
        ProcessError::Denied {
            what,
            missing_grant,
        } => StepError::permanent(format!(
            "cannot run the script: {what} is denied (add {missing_grant})"
        )),
        ProcessError::Failed(m) => {
            StepError::permanent(format!("cannot run the script with '{program}': {m}"))
        }
    }
}

/// Names a shell gives a meaning of its own when they come first (POSIX,
/// dash and bash builtins and reserved words): a script starting with one
/// goes through the shell.
const SHELL_WORDS: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "]]",
    "!",
    "{",
    "}",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "chdir",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// The words of `script` when it is one plain command the shell would only
/// split on blanks, look up on `PATH` and start (see the module doc);
/// `None` for anything else.
fn plain_command(script: &str) -> Option<Vec<&str>> {
    // Blanks and line breaks only: the shell reads any other character
    // (`\r` of a CRLF file too) as part of a word.
    let line = script.trim_matches([' ', '\t', '\n']);
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:,+@%=- \t".contains(c);
    if line.is_empty() || !line.chars().all(plain) {
        return None;
    }
    let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let program = words[0];
    let simple_name = !program.contains(['/', '=']) && !program.starts_with('-');
    (simple_name && !SHELL_WORDS.contains(&program)).then_some(words)
}

/// Turn a failed run into the step's error.
fn check_status(out: &Output, stderr: &str) -> Result<(), StepError> {
    let tail = stderr_tail(stderr);
    if out.timed_out {
        return Err(StepError::transient(format!(
            "script timed out and was killed{tail}"
        )));
    }
    match (out.exit_code, out.signal) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(StepError::permanent(format!(
            "script exited with code {code}{tail}"
        ))),
        (None, Some(signal)) => Err(StepError::permanent(format!(
            "script was killed by signal {signal}{tail}"
        ))),
        (None, None) => Err(StepError::permanent(format!(
            "script ended without an exit code{tail}"
        ))),
    }
}

/// `:\n<last lines of stderr>`, or nothing when stderr is empty.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    format!(":\n{}", lines[start..].join("\n"))
}

fn trim_line_break(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

/// Parse the `$WFHOST_OUTPUT` file: `key=value` lines (typed, see
/// [`typed`]) and `key<<DELIM` blocks ending with a line `DELIM` (strings).
/// Empty lines are ignored; a later key replaces an earlier one. Errors name
/// the 1-based line number.
fn parse_output_file(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut lines = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        let (key, value) = match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                (line[..e].to_string(), typed(&line[e + 1..]))
            }
            (_, Some(h)) => {
                let key = line[..h].to_string();
                let delimiter = &line[h + 2..];
                if delimiter.trim().is_empty() {
                    return Err(format!(
                        "$WFHOST_OUTPUT line {number}: missing delimiter after '<<' in '{line}'"
                    ));
                }
                let mut body: Vec<&str> = Vec::new();
                loop {
                    match lines.next() {
                        Some((_, l)) if l == delimiter => break,
                        Some((_, l)) => body.push(l),
                        None => {
                            return Err(format!(
                                "$WFHOST_OUTPUT line {number}: '{key}<<{delimiter}' is never \
                                 closed by a line '{delimiter}'"
                            ))
                        }
                    }
                }
                (key, Value::String(body.join("\n")))
            }
            _ => {
                return Err(format!(
                    "$WFHOST_OUTPUT line {number}: expected 'key=value' or 'key<<DELIMITER', \
                     got '{line}'"
                ))
            }
        };
        check_key(&key, number)?;
        fields.retain(|(k, _)| *k != key);
        fields.push((key, value));
    }
    Ok(fields)
}

/// A `key=value` value: the JSON it spells when that is a number in its plain
/// form (the text is exactly how the number prints: `1.10` and `1e3` stay
/// text, so nothing written is silently changed), `true`/`false`, an array
/// or an object; otherwise the text itself (JSON strings and `null`
/// included).
fn typed(text: &str) -> Value {
    if text.trim() != text {
        return Value::String(text.to_string());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Number(number)) if number.to_string() == text => Value::Number(number),
        Ok(value @ (Value::Bool(_) | Value::Array(_) | Value::Object(_))) => value,
        _ => Value::String(text.to_string()),
    }
}

/// Keys must be identifiers (usable as `steps.<id>.output.<key>`) and not
/// shadow the built-in fields.
fn check_key(key: &str, number: usize) -> Result<(), String> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "$WFHOST_OUTPUT line {number}: invalid key '{key}' (use letters, digits, '_' and \
             '-', starting with a letter or '_')"
        ));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(format!(
            "$WFHOST_OUTPUT line {number}: key '{key}' collides with the built-in output field \
             '{key}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_are_split_into_their_words() {
        assert_eq!(plain_command("sleep 0.2"), Some(vec!["sleep", "0.2"]));
        assert_eq!(
            plain_command("  cargo test\t--release -p my-crate --features=a,b  \n"),
            Some(vec![
                "cargo",
                "test",
                "--release",
                "-p",
                "my-crate",
                "--features=a,b"
            ])
        );
        assert_eq!(
            plain_command("node ./build/x.js host:8080 user@example.org 50% +1"),
            Some(vec![
                "node",
                "./build/x.js",
                "host:8080",
                "user@example.org",
                "50%",
                "+1"
            ])
        );
    }

    #[test]
    fn a_chosen_shell_or_path_keeps_the_shell() {
        let config = |with: Value| serde_json::from_value::<Config>(with).unwrap();
        assert!(config(json!({ "run": "make" })).may_skip_shell());
        assert!(
            config(json!({ "run": "make", "shell": "sh", "env": { "A": "1" } })).may_skip_shell()
        );
        assert!(!config(json!({ "run": "make", "shell": "bash" })).may_skip_shell());
        assert!(!config(json!({ "run": "make", "env": { "PATH": "/opt/bin" } })).may_skip_shell());
    }

    #[test]
    fn anything_the_shell_reads_differently_goes_through_it() {
        for script in [
            "",
            "   ",
            "echo hi",
            "true",
            "cd sub",
            "exit 3",
            "test -f x",
            "if",
            "[ -f x ]",
            "./build.sh",
            "/usr/bin/env",
            "A=1 make",
            "-x",
            "echo $HOME",
            "cat 'a b'",
            "cat \"a\"",
            "ls *.txt",
            "ls file?",
            "ls ~",
            "make # comment",
            "make; make install",
            "make && make install",
            "make | tee log",
            "make > log",
            "make < in",
            "sleep 1 &",
            "make {a,b}",
            "echo `id`",
            "cat a\\ b",
            "make\nmake install",
            "ls\r",
            "grép x",
        ] {
            assert_eq!(plain_command(script), None, "{script:?}");
        }
    }

    #[test]
    fn parses_key_value_and_heredoc() {
        let text = "a=1\n\nb=x=y\r\nmsg<<EOF\nline one\nline two\nEOF\na=2\nempty=\n";
        let fields = parse_output_file(text).unwrap();
        assert_eq!(
            fields,
            vec![
                ("b".to_string(), json!("x=y")),
                ("msg".to_string(), json!("line one\nline two")),
                ("a".to_string(), json!(2)),
                ("empty".to_string(), json!("")),
            ]
        );
    }

    #[test]
    fn values_that_spell_json_are_typed_and_nothing_else_changes() {
        for (text, value) in [
            ("3", json!(3)),
            ("-1.5", json!(-1.5)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("[1,\"a\"]", json!([1, "a"])),
            ("{\"k\": {\"n\": 1}}", json!({"k": {"n": 1}})),
            // Kept as written.
            ("1.10", json!("1.10")),
            ("007", json!("007")),
            ("1e3", json!("1e3")),
            (" 3", json!(" 3")),
            ("null", json!("null")),
            ("\"quoted\"", json!("\"quoted\"")),
            ("hello", json!("hello")),
            ("[unclosed", json!("[unclosed")),
            ("", json!("")),
        ] {
            assert_eq!(typed(text), value, "{text}");
        }
        let fields = parse_output_file("n<<EOF\n3\nEOF\n").unwrap();
        assert_eq!(fields[0].1, json!("3"), "a heredoc value stays text");
    }

    #[test]
    fn rejects_bad_lines() {
        let e = parse_output_file("a=1\nnonsense\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_output_file("stdout=x\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("collides"), "{e}");
        let e = parse_output_file("ok=1\nm<<END\nx\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
        let e = parse_output_file("bad key=1\n").unwrap_err();
        assert!(e.contains("invalid key"), "{e}");
        let e = parse_output_file("k<<\n").unwrap_err();
        assert!(e.contains("missing delimiter"), "{e}");
    }

    #[test]
    fn failure_messages() {
        let out = Output {
            exit_code: Some(3),
            stderr: b"one\ntwo\n".to_vec(),
            ..Default::default()
        };
        let e = check_status(&out, "one\ntwo\n").unwrap_err();
        assert_eq!(
            e,
            StepError::permanent("script exited with code 3:\none\ntwo")
        );
        let out = Output {
            timed_out: true,
            signal: Some(9),
            ..Default::default()
        };
        assert!(check_status(&out, "").unwrap_err().is_transient());
        let out = Output {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(
            check_status(&out, "").unwrap_err().message(),
            "script was killed by signal 9"
        );
    }
}
