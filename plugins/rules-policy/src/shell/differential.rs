//! Differential test: every case goes through the real `/bin/sh` (`sh -n`
//! for the syntax, `sh -c` with a tracing `PATH` for what runs) and through
//! [`split`]; the two must agree.
//!
//! Every program a case names is a shim in a temporary `PATH` directory that
//! appends its name and arguments to a log, so the log lists exactly the
//! external commands the shell started. The properties checked:
//!
//! - a line the splitter accepts is valid sh (`sh -n` agrees);
//! - every command the shell started is one the splitter reported, word for
//!   word (after leading `NAME=value` assignments; a word holding `$` stands
//!   for whatever it expands to), unless the splitter reported a computed
//!   program name or a builtin that runs text as shell code, which no
//!   pattern may allow anyway.

use super::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Programs with a tracing shim; `fail` exits 1, the others 0.
const SHIMS: &[&str] = &[
    "ls", "rm", "cat", "cargo", "git", "a", "b", "c", "x", "y", "wc", "fail",
];

const CASES: &[&str] = &[
    // Plain separators.
    "ls",
    "ls -l a",
    "ls; rm x",
    "ls && rm x",
    "fail || rm x",
    "ls | rm x",
    "ls & rm x",
    "ls&&rm x",
    "ls||rm x",
    "ls|rm x",
    "ls &\nrm x",
    "ls\n\nrm x",
    "ls\n;\nrm x",
    "ls &&\n\nrm x",
    "fail && rm x; rm y",
    "ls\tx;\trm\ty",
    "ls\r; rm x",
    // `&>` is `&` then `>`.
    "ls &>/dev/null rm x",
    "ls &> /dev/null; rm x",
    "ls &>/dev/null",
    "ls >&/dev/null rm x",
    "ls >&- rm x",
    // Comments.
    "ls #'\nrm x\n#'",
    "ls #\"\nrm x\n#\"",
    "ls # \\\nrm x",
    "ls #\\\nrm x",
    "ls # x\\",
    "ls #`\nrm x",
    "ls #$(\nrm x",
    "ls;#x\nrm y",
    "ls a#b; rm y",
    "ls \\#x; rm y",
    "ls '#'x; rm y",
    "ls '#'\\\nrm x",
    "ls \\\n# comment\nrm x",
    "ls\\\n#x\nrm y",
    "(ls)#x\nrm y",
    "ls $# rm",
    "ls $(ls #)\nrm x\n)",
    "ls `ls # x` rm y",
    // Quotes, escapes, continuations.
    "ls 'a;rm x'",
    "ls \"a;rm x\"",
    "ls a\\;rm x",
    "ls 'a\nb'; rm x",
    "ls \"a\nb\" && rm x",
    "ls \\\nrm x",
    "ls\\\n;rm x",
    "l\\\ns",
    "ls\\\n\\\nx",
    "\\ls; \"rm\" x",
    "r''m x",
    "r\\m x",
    "ls \"a\\\"b\" 'c\\d' \"\\n\"",
    "git commit -m \"fix: a && b; c\" && rm x",
    "ls \"$@\" rm",
    "ls ${HOME}; rm x",
    "ls 'unterminated",
    "ls \"unterminated\nrm x",
    "ls x\\",
    "ls $'\\x3b' rm",
    // Sub-shells and groups.
    "(ls; rm x)",
    "(ls) && (rm x)",
    "( (ls) ); rm x",
    "(ls) >/dev/null; rm x",
    "(ls) rm x",
    "(ls",
    "ls)",
    "()",
    "(ls;)",
    "{ ls; rm x; }",
    "{ ls; } && rm x",
    "{ls; rm x;}",
    "{ ls; }; }; rm x",
    "ls; then rm x",
    "if ls; then rm x; fi ls",
    "if ls; then rm x",
    "ls $(if ls; then rm x; fi)",
    "(if ls; then rm x; fi) && rm y",
    "(if ls; then rm x) ; fi",
    // Keywords.
    "if ls; then rm x; fi",
    "if fail; then ls; else rm x; fi",
    "if fail; then ls; elif ls; then rm x; fi",
    "while fail; do ls; done; rm x",
    "until ls; do fail; done; rm x",
    "for i in a b; do rm $i; done",
    "! rm x",
    "! fail && rm x",
    "case a in a) rm x;; esac",
    "case a in a) rm x; esac",
    // Assignments.
    "A=1 rm x",
    "A=1 B='2 3' rm x",
    "A=1; rm x",
    "A=$(rm x) ls",
    // Substitutions.
    "ls $(rm x)",
    "ls \"$(rm x)\"",
    "ls `rm x`",
    "ls \"`rm x`\"",
    "ls $(rm x; cat y)",
    "ls $(ls $(rm x))",
    "ls `ls \\`rm x\\``",
    "ls \"$(cat \")\"; rm x)\"",
    "ls \"`cat \\\"a b\\\"`\"",
    "ls $( (rm x) )",
    "ls $(rm x",
    "ls `rm x",
    "ls $((1+2)); rm x",
    "ls ${x:-$(rm y)}",
    "ls \"${x:-'}'}\"; rm y",
    // Builtins that run text or programs.
    "exec rm x",
    "command rm x",
    "eval 'rm x'",
    "eval rm x",
    "alias ls='rm x'\nls",
    "trap 'rm x' EXIT; ls",
    "ls() { rm x; }; ls",
    "f() { rm x; }; f",
    // Redirections.
    "ls 2>&1 | rm x",
    "ls 2>/dev/null; rm x",
    "ls > /dev/null && rm x",
    "ls </dev/null | cat",
    "ls 3>&- ; rm x",
    "ls >/dev/null rm x",
    "ls a2>&2 b",
    "ls 2 >&2",
    "ls 2>&1>/dev/null; rm x",
    "ls >&2 2>&1 | rm x",
    "ls >| /dev/null; rm x",
    "ls <> /dev/null; rm x",
    "ls > out; rm x",
    "ls >>out",
    "cat <<EOF\nrm x\nEOF",
    "ls <<< x",
    "ls <(rm x)",
    // Operators sh rejects.
    "ls;;rm x",
    "ls |& rm x",
    "ls && && rm x",
    "; rm x",
    "ls |",
    "ls & & rm x",
    "ls & ; rm x",
    "ls &&& rm x",
    "&& rm x",
    "",
    "# only a comment",
];

/// A temporary directory with the shims (`bin/`), a working directory
/// (`work/`) and the log; removed on drop.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "rules-policy-differential-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let sandbox = Sandbox { root };
        for name in SHIMS {
            let code = if *name == "fail" { 1 } else { 0 };
            // One `printf` of the whole record: a single append, so records
            // of commands running at once (a pipeline) do not interleave.
            let script = format!(
                "#!/bin/sh\nrecord=$(printf '%s\\037' \"${{0##*/}}\" \"$@\"; printf .)\n\
                 printf '%s\\036' \"${{record%.}}\" >> '{}'\nexit {code}\n",
                sandbox.log().display()
            );
            let path = sandbox.root.join("bin").join(name);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        sandbox
    }

    fn log(&self) -> PathBuf {
        self.root.join("trace.log")
    }

    fn sh(&self, args: &[&str]) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .args(args)
            .env_clear()
            .env("PATH", self.root.join("bin"))
            .current_dir(self.root.join("work"))
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Whether `sh -n` accepts the line.
    fn valid(&self, line: &str) -> bool {
        self.sh(&["-n", "-c", line])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// The commands `sh -c line` starts, each as its argv. Waits for
    /// background commands too: they hold the stdout pipe until they end.
    fn run(&self, line: &str) -> Vec<Vec<String>> {
        let _ = std::fs::remove_file(self.log());
        let mut child = self
            .sh(&["-c", line])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{line:?}: `sh -c` did not end within 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reader.join().unwrap();
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        log.split('\u{1e}')
            .filter(|record| !record.is_empty())
            .map(|record| {
                record
                    .strip_suffix('\u{1f}')
                    .unwrap_or(record)
                    .split('\u{1f}')
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether the splitter's `seen` command accounts for the argv `ran`.
fn explains(seen: &SimpleCommand, ran: &[String]) -> bool {
    let words: Vec<&str> = seen
        .words
        .iter()
        .map(String::as_str)
        .skip_while(|w| is_assignment(w))
        .collect();
    match words.iter().position(|w| w.contains('$')) {
        // A word holding `$` expands to any number of words: only the words
        // before it are known.
        Some(computed) => {
            ran.len() >= computed && words[..computed].iter().zip(ran).all(|(a, b)| a == b)
        }
        None => words.len() == ran.len() && words.iter().zip(ran).all(|(a, b)| a == b),
    }
}

/// Whether the splitter itself says no pattern can tell what this line runs.
fn opaque(commands: &[SimpleCommand]) -> bool {
    commands.iter().any(|c| {
        c.computed_program().is_some()
            || c.doubt
                .as_deref()
                .is_some_and(|d| d.contains("runs text as shell code"))
    })
}

#[test]
fn the_splitter_agrees_with_sh() {
    assert!(
        Path::new("/bin/sh").exists(),
        "the differential test needs /bin/sh"
    );
    let sandbox = Sandbox::new();
    let mut disagreements = Vec::new();
    let (mut split_count, mut refused_count) = (0, 0);
    for line in CASES {
        let valid = sandbox.valid(line);
        let ran = sandbox.run(line);
        match split(line) {
            Err(why) => {
                refused_count += 1;
                eprintln!("refused {line:?} ({why}); sh ran {ran:?}");
            }
            Ok(commands) => {
                split_count += 1;
                if !valid {
                    disagreements.push(format!(
                        "{line:?}: split into {commands:?} but `sh -n` rejects it"
                    ));
                    continue;
                }
                if opaque(&commands) {
                    continue;
                }
                for argv in &ran {
                    if !commands.iter().any(|seen| explains(seen, argv)) {
                        disagreements.push(format!(
                            "{line:?}: sh ran {argv:?}, the splitter saw {commands:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the splitter disagrees with /bin/sh:\n{}",
        disagreements.join("\n")
    );
    // The cases exercise both paths.
    assert!(
        split_count > 60 && refused_count > 25,
        "{split_count} split, {refused_count} refused"
    );
}

#[test]
fn the_tracing_shim_sees_what_sh_runs() {
    let sandbox = Sandbox::new();
    assert_eq!(
        sandbox.run("ls 'a b' && fail || rm \"x\ny\" & wait"),
        vec![
            vec!["ls".to_string(), "a b".to_string()],
            vec!["fail".to_string()],
            vec!["rm".to_string(), "x\ny".to_string()],
        ]
    );
    assert!(sandbox.valid("ls; rm x"));
    assert!(!sandbox.valid("ls;;rm x"));
}
