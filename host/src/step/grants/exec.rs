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
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return std::fs::canonicalize(program)
            .ok()
            .filter(|p| is_executable(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .and_then(|found| std::fs::canonicalize(found).ok())
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
