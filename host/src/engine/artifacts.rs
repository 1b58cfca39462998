//! A step's `artifacts:`: after it completes, the files matching its globs
//! inside its read-write grants are copied into the run folder
//! (`artifacts/<sha256>`) and recorded in the store.
//!
//! Files are found and read through the grant's directory handle (cap-std):
//! nothing outside the directory the step was granted is reachable, symbolic
//! links are not followed, and every file is measured on its handle before
//! and while it is read, against a per-file and a per-step budget.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::step::grants::ResolvedGrants;

/// The largest artifact, in bytes.
pub const MAX_ARTIFACT_BYTES: u64 = 64 << 20;
/// The most bytes of artifacts one step keeps.
pub const MAX_STEP_BYTES: u64 = 256 << 20;
/// The most artifacts one step keeps.
pub const MAX_ARTIFACTS: usize = 1000;
/// How deep the search goes below a grant's directory.
const MAX_DEPTH: usize = 32;
/// The most directory entries one step's search looks at.
const MAX_ENTRIES: usize = 100_000;

/// An artifact copied into the run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its path relative to the workflow's directory.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Media type from the extension.
    pub media_type: String,
}

/// What a pattern must be: relative, without `..`, and (its directory part
/// before the first wildcard) inside one of the step's read-write grants.
/// Returns the grant's directory and the pattern relative to it.
pub fn place(
    pattern: &str,
    workflow_dir: &Path,
    grants: &ResolvedGrants,
) -> Result<(PathBuf, String), String> {
    let path = Path::new(pattern);
    if pattern.is_empty() || path.is_absolute() {
        return Err(format!(
            "artifacts '{pattern}': give a path relative to the workflow file"
        ));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("artifacts '{pattern}': `..` is not allowed"));
    }
    let absolute = workflow_dir.join(path);
    for (dir, writable) in &grants.files {
        if !writable {
            continue;
        }
        if let Ok(rest) = absolute.strip_prefix(dir) {
            let rest = rest.to_string_lossy().into_owned();
            if !rest.is_empty() {
                return Ok((dir.clone(), rest));
            }
        }
    }
    Err(format!(
        "artifacts '{pattern}' is not inside a read-write grant of the step (grant its folder with `access: read-write`)"
    ))
}

/// A glob as a regex over `/`-separated relative paths.
fn glob_regex(glob: &str) -> Result<regex::Regex, String> {
    let mut out = String::from("^");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    out.push_str("(?:.*/)?");
                } else {
                    out.push_str(".*");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push('$');
    regex::Regex::new(&out).map_err(|e| format!("artifacts '{glob}': {e}"))
}

/// Copy the files matching `patterns` into `into` (the run folder's
/// `artifacts/`), named by their SHA-256. Returns what was kept and, for
/// each file left out, why.
pub fn collect(
    patterns: &[String],
    workflow_dir: &Path,
    grants: &ResolvedGrants,
    into: &Path,
) -> (Vec<Kept>, Vec<String>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for pattern in patterns {
        let (dir, relative) = match place(pattern, workflow_dir, grants) {
            Ok(found) => found,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        let Some(handle) = grants.handle(&dir) else {
            skipped.push(format!(
                "artifacts '{pattern}': its grant's directory is not open"
            ));
            continue;
        };
        let regex = match glob_regex(&relative) {
            Ok(regex) => regex,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        let mut found = Vec::new();
        let mut budget = MAX_ENTRIES;
        walk(handle.dir(), String::new(), 0, &mut budget, &mut found);
        if budget == 0 {
            skipped.push(format!(
                "artifacts '{pattern}': stopped after {MAX_ENTRIES} directory entries"
            ));
        }
        found.sort();
        for file in found.into_iter().filter(|f| regex.is_match(f)) {
            let name = Path::new(&dir)
                .join(&file)
                .strip_prefix(workflow_dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| file.clone());
            if !seen.insert(name.clone()) {
                continue;
            }
            if kept.len() >= MAX_ARTIFACTS {
                skipped.push(format!("{name}: more than {MAX_ARTIFACTS} artifacts"));
                break;
            }
            match keep(
                handle.dir(),
                &file,
                into,
                MAX_STEP_BYTES.saturating_sub(total),
            ) {
                Ok((size, sha256)) => {
                    total += size;
                    kept.push(Kept {
                        media_type: media_type(&name).to_string(),
                        name,
                        size,
                        sha256,
                    });
                }
                Err(why) => skipped.push(format!("{name}: {why}")),
            }
        }
    }
    (kept, skipped)
}

/// Regular files below `dir` (no symbolic links followed), as relative
/// `/`-separated paths.
fn walk(
    dir: &cap_std::fs::Dir,
    prefix: String,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = dir.entries() else { return };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if kind.is_dir() {
            if let Ok(sub) = entry.open_dir() {
                walk(&sub, path, depth + 1, budget, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// Copy one file (read through the grant's handle, measured on its own
/// handle) into `into/<sha256>`; at most `room` bytes.
fn keep(
    dir: &cap_std::fs::Dir,
    relative: &str,
    into: &Path,
    room: u64,
) -> Result<(u64, String), String> {
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    {
        use cap_std::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = dir
        .open_with(relative, &options)
        .map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    let limit = MAX_ARTIFACT_BYTES.min(room);
    if metadata.len() > limit {
        return Err(format!(
            "{} bytes: over the budget of {limit} bytes (at most {} MiB per artifact, {} MiB per step)",
            metadata.len(),
            MAX_ARTIFACT_BYTES >> 20,
            MAX_STEP_BYTES >> 20
        ));
    }
    let mut bytes = Vec::new();
    file.into_std()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "grew past the budget of {limit} bytes while it was read"
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    std::fs::create_dir_all(into).map_err(|e| format!("{}: {e}", into.display()))?;
    let target = into.join(&sha256);
    if !target.exists() {
        let partial = into.join(format!(".{sha256}.partial"));
        std::fs::write(&partial, &bytes).map_err(|e| format!("{}: {e}", partial.display()))?;
        std::fs::rename(&partial, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok((bytes.len() as u64, sha256))
}

/// A media type from a file name's extension.
pub fn media_type(name: &str) -> &'static str {
    let extension = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "json" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        let r = glob_regex("out/**/*.md").unwrap();
        assert!(r.is_match("out/a.md"));
        assert!(r.is_match("out/x/y/a.md"));
        assert!(!r.is_match("out/a.txt"));
        assert!(!r.is_match("other/a.md"));
        let r = glob_regex("report-?.txt").unwrap();
        assert!(r.is_match("report-1.txt") && !r.is_match("report-12.txt"));
        let r = glob_regex("a+b(c).txt").unwrap();
        assert!(r.is_match("a+b(c).txt"));
    }

    #[test]
    fn patterns_must_stay_inside_a_writable_grant() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        let grants = ResolvedGrants {
            files: vec![(root.join("out"), true), (root.join("src"), false)],
            ..ResolvedGrants::default()
        };
        assert_eq!(
            place("out/*.md", &root, &grants).unwrap(),
            (root.join("out"), "*.md".to_string())
        );
        assert!(place("src/*.rs", &root, &grants)
            .unwrap_err()
            .contains("not inside a read-write grant"));
        assert!(place("../x", &root, &grants).unwrap_err().contains("`..`"));
        assert!(place("/etc/passwd", &root, &grants)
            .unwrap_err()
            .contains("relative"));
    }
}
