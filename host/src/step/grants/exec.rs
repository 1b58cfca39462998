//! The `exec` grant: programs a step may start (through `process`, or an
//! agent's `exec` tool), found on `PATH` or given as paths when the grants
//! are resolved. Only these programs (and the dynamic loader or `#!`
//! interpreter each names) may be executed in the OS sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{
    none_if_empty, CapabilityUnit, Caps, CeilingSpec, Grants, PathAccess, ResolveContext,
    ResolvedGrants, SandboxPlan,
};
use crate::step::bindings::process::{Denial, ProcessError};

/// One `exec` grant line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecGrant {
    /// As written in the workflow (`git`, `/usr/bin/git`).
    pub name: String,
    /// Canonical absolute path it resolved to at validation.
    pub path: PathBuf,
}

/// The programs of `@coreutils`, a convenience set for scripts: `exec:
/// ["@coreutils"]` grants those of them found on `PATH`.
pub const COREUTILS: &[&str] = &[
    "basename",
    "cat",
    "chmod",
    "cp",
    "cut",
    "date",
    "diff",
    "dirname",
    "echo",
    "env",
    "expr",
    "false",
    "find",
    "grep",
    "head",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mktemp",
    "mv",
    "printf",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "uniq",
    "wc",
    "xargs",
];

/// The programs an `exec` line stands for: itself, or the members of a set
/// (`@coreutils`). `Err` for an unknown set.
pub fn exec_line_programs(line: &str) -> Result<Vec<&str>, String> {
    match line.strip_prefix('@') {
        None => Ok(vec![line]),
        Some("coreutils") => Ok(COREUTILS.to_vec()),
        Some(_) => Err(format!(
            "exec grant '{line}': unknown set (the sets are: @coreutils)"
        )),
    }
}

/// Resolve a program name through `PATH`, or canonicalise a path.
///
/// The answer for a name is remembered briefly (see [`recent`]): a run
/// resolves each step's grants several times (validation, the ceiling,
/// every program start), and a lookup is a dozen system calls (`@coreutils`
/// is 42 lookups).
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return std::fs::canonicalize(program)
            .ok()
            .filter(|p| is_executable(p));
    }
    let path = std::env::var_os("PATH")?;
    recent::lookup(&path, program, || {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .and_then(|found| std::fs::canonicalize(found).ok())
    })
}

/// Recent answers of [`resolve_program`] for names looked up on `PATH`.
///
/// Kept for at most [`recent::KEPT_FOR`] and for one value of `PATH`, so a
/// long-running process (`wfhost serve`) sees a program installed or moved
/// a second later, as it would have at its next validation; at most
/// [`recent::MAX_NAMES`] names, so a plugin asking for endless made-up
/// names costs no memory.
mod recent {
    use std::collections::HashMap;
    use std::ffi::{OsStr, OsString};
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// How long an answer is used.
    pub(super) const KEPT_FOR: Duration = Duration::from_secs(1);
    /// Most names remembered at once.
    pub(super) const MAX_NAMES: usize = 1024;

    /// The process's answers.
    static ANSWERS: Recent = Recent::new();

    /// The remembered answer for `name` on `path`, or `search`'s (then
    /// remembered).
    pub(super) fn lookup(
        path: &OsStr,
        name: &str,
        search: impl FnOnce() -> Option<PathBuf>,
    ) -> Option<PathBuf> {
        ANSWERS.lookup(path, name, search, Instant::now())
    }

    /// Answers for one `PATH`, all dropped [`KEPT_FOR`] after the first.
    pub(super) struct Recent(Mutex<Option<Answers>>);

    struct Answers {
        path: OsString,
        since: Instant,
        names: HashMap<String, Option<PathBuf>>,
    }

    impl Answers {
        fn fresh(&self, path: &OsStr, now: Instant) -> bool {
            self.path == path && now.saturating_duration_since(self.since) < KEPT_FOR
        }
    }

    impl Recent {
        pub(super) const fn new() -> Recent {
            Recent(Mutex::new(None))
        }

        pub(super) fn lookup(
            &self,
            path: &OsStr,
            name: &str,
            search: impl FnOnce() -> Option<PathBuf>,
            now: Instant,
        ) -> Option<PathBuf> {
            {
                let answers = self.0.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(found) = answers
                    .as_ref()
                    .filter(|a| a.fresh(path, now))
                    .and_then(|a| a.names.get(name))
                {
                    return found.clone();
                }
            }
            // Searched without the lock: parallel lookups do not queue.
            let found = search();
            let mut answers = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !answers.as_ref().is_some_and(|a| a.fresh(path, now)) {
                *answers = Some(Answers {
                    path: path.to_os_string(),
                    since: now,
                    names: HashMap::new(),
                });
            }
            if let Some(answers) = answers.as_mut() {
                if answers.names.len() < MAX_NAMES {
                    answers.names.insert(name.to_string(), found.clone());
                }
            }
            found
        }
    }

    #[cfg(test)]
    mod tests {
        use std::cell::Cell;
        use std::path::Path;

        use super::*;

        /// `lookup` on `recent`, counting the searches in `searches`.
        fn ask(
            recent: &Recent,
            path: &str,
            name: &str,
            now: Instant,
            searches: &Cell<u32>,
        ) -> Option<PathBuf> {
            recent.lookup(
                OsStr::new(path),
                name,
                || {
                    searches.set(searches.get() + 1);
                    Some(Path::new(path).join(name))
                },
                now,
            )
        }

        #[test]
        fn an_answer_is_reused_for_the_same_path_within_its_time() {
            let recent = Recent::new();
            let searches = Cell::new(0);
            let start = Instant::now();
            assert_eq!(
                ask(&recent, "/a", "git", start, &searches),
                Some("/a/git".into())
            );
            let later = start + KEPT_FOR / 2;
            assert_eq!(
                ask(&recent, "/a", "git", later, &searches),
                Some("/a/git".into())
            );
            assert_eq!(searches.get(), 1);
        }

        #[test]
        fn another_path_or_an_old_answer_searches_again() {
            let recent = Recent::new();
            let searches = Cell::new(0);
            let start = Instant::now();
            ask(&recent, "/a", "git", start, &searches);
            assert_eq!(
                ask(&recent, "/b", "git", start, &searches),
                Some("/b/git".into())
            );
            assert_eq!(searches.get(), 2);
            ask(&recent, "/b", "git", start + KEPT_FOR, &searches);
            assert_eq!(searches.get(), 3);
        }

        #[test]
        fn at_most_max_names_are_kept() {
            let recent = Recent::new();
            let searches = Cell::new(0);
            let now = Instant::now();
            for i in 0..MAX_NAMES + 10 {
                ask(&recent, "/a", &format!("p{i}"), now, &searches);
            }
            let kept = recent.0.lock().unwrap().as_ref().unwrap().names.len();
            assert_eq!(kept, MAX_NAMES);
            // A name past the budget is searched every time, still answered.
            let name = format!("p{}", MAX_NAMES + 5);
            assert!(ask(&recent, "/a", &name, now, &searches).is_some());
            assert_eq!(searches.get() as usize, MAX_NAMES + 11);
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `exec` capability unit.
pub(super) struct Exec;

impl CapabilityUnit for Exec {
    /// Each line (or each member of a set) found on `PATH`; a set grants
    /// the members this machine has, a missing single program is a
    /// problem.
    fn resolve(
        &self,
        spec: &Grants,
        _cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    ) {
        for line in &spec.exec {
            let names = match exec_line_programs(line) {
                Ok(names) => names,
                Err(error) => {
                    problems.push(error);
                    continue;
                }
            };
            let set = line.starts_with('@');
            for name in names {
                match resolve_program(name) {
                    Some(path) if !into.exec.iter().any(|g| g.path == path && g.name == name) => {
                        into.exec.push(ExecGrant {
                            name: name.to_string(),
                            path,
                        })
                    }
                    Some(_) => {}
                    // A set grants the members this machine has.
                    None if set => {}
                    None => problems.push(format!("exec grant '{name}': no such program on PATH")),
                }
            }
        }
    }

    /// The ceiling's programs, by name and by the path each resolves to
    /// on this machine.
    fn load_cap(&self, spec: &CeilingSpec, _base: &Path, into: &mut Caps) -> Result<(), String> {
        into.exec = spec
            .exec
            .as_ref()
            .map(|lines| {
                let mut entries = Vec::new();
                for line in lines {
                    for name in exec_line_programs(line).map_err(|e| format!("exec: {e}"))? {
                        entries.push((name.to_string(), resolve_program(name)));
                    }
                }
                Ok::<_, String>(entries)
            })
            .transpose()?;
        Ok(())
    }

    /// A program is within the ceiling when the ceiling names it or a
    /// program at the same path.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        _timeout: Duration,
        problems: &mut Vec<String>,
    ) {
        let Some(allowed) = &caps.exec else {
            return;
        };
        for grant in &grants.exec {
            let covered = allowed
                .iter()
                .any(|(name, path)| *name == grant.name || path.as_ref() == Some(&grant.path));
            if !covered {
                let names: Vec<String> = allowed.iter().map(|(n, _)| n.clone()).collect();
                problems.push(format!(
                    "exec grant '{}' exceeds the operator ceiling in {source} (ceiling exec: {})",
                    grant.name,
                    none_if_empty(&names)
                ));
            }
        }
    }

    /// Each granted program executable (the sandbox adds the loader or
    /// interpreter it names).
    fn sandbox(&self, grants: &ResolvedGrants, plan: &mut SandboxPlan) {
        for grant in &grants.exec {
            plan.paths.push((grant.path.clone(), PathAccess::Execute));
        }
    }

    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>) {
        let exec = grants.exec.iter().map(|g| json!(g.path));
        out.insert("exec".into(), exec.collect());
    }

    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>) {
        let exec: Vec<String> = grants
            .exec
            .iter()
            .map(|g| g.path.display().to_string())
            .collect();
        if !exec.is_empty() {
            parts.push(format!("exec: {}", exec.join(", ")));
        }
    }
}

/// Check `program` (as a step asks to start it) against the `exec` grants;
/// the granted path to run, or a denial naming the grant to add.
pub fn authorize(granted: &[ExecGrant], program: &str) -> Result<PathBuf, ProcessError> {
    let requested = resolve_program(program);
    let found = granted
        .iter()
        .find(|grant| grant.name == program || requested.as_ref() == Some(&grant.path));
    if let Some(grant) = found {
        return Ok(grant.path.clone());
    }
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string());
    Err(ProcessError::Denied(Denial {
        what: format!("starting program '{program}'"),
        missing_grant: format!("grants: {{ exec: [{name}] }}"),
    }))
}

/// The `sh` the step may start (the agent's `exec` tool runs its command
/// lines with it), if any.
pub fn granted_shell(grants: &ResolvedGrants) -> Option<PathBuf> {
    let sh = resolve_program("sh");
    grants
        .exec
        .iter()
        .find(|g| g.name == "sh" || Some(&g.path) == sh.as_ref())
        .map(|g| g.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(name: &str) -> ExecGrant {
        ExecGrant {
            name: name.to_string(),
            path: resolve_program(name).unwrap_or_else(|| panic!("{name} is not installed")),
        }
    }

    #[test]
    fn exec_sets_expand_and_unknown_sets_are_named() {
        let coreutils = exec_line_programs("@coreutils").unwrap();
        assert!(coreutils.contains(&"cat") && coreutils.contains(&"sleep"));
        assert_eq!(exec_line_programs("git").unwrap(), ["git"]);
        assert_eq!(
            exec_line_programs("@everything").unwrap_err(),
            "exec grant '@everything': unknown set (the sets are: @coreutils)"
        );
    }

    #[test]
    fn programs_resolve_on_path() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute());
        assert!(resolve_program("definitely-not-a-program-wfhost").is_none());
        assert_eq!(resolve_program(sh.to_str().unwrap()).unwrap(), sh);
    }

    #[test]
    fn a_program_without_exec_grant_is_denied_naming_the_grant() {
        match authorize(&[exec("sh")], "cat") {
            Err(ProcessError::Denied(denial)) => {
                assert_eq!(denial.what, "starting program 'cat'");
                assert_eq!(denial.missing_grant, "grants: { exec: [cat] }");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        assert_eq!(
            authorize(&[exec("sh")], "sh").unwrap(),
            resolve_program("sh").unwrap()
        );
    }

    #[test]
    fn the_shell_is_granted_by_name_or_path() {
        let mut grants = ResolvedGrants::default();
        assert_eq!(granted_shell(&grants), None);
        grants.exec.push(exec("cat"));
        assert_eq!(granted_shell(&grants), None);
        let sh = resolve_program("sh").unwrap();
        grants.exec.push(ExecGrant {
            name: sh.display().to_string(),
            path: sh.clone(),
        });
        assert_eq!(granted_shell(&grants), Some(sh));
    }
}
