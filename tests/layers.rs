//! The layer check: no module of `host/src` may reference a module of a
//! higher layer (the rule is stated in `host/src/lib.rs`).
//!
//! Every `crate::<module>` and `super::`-relative path in every source file
//! (tests included, comments excluded) is resolved to the top-level module it
//! names; a reference to a module ranked above the file's own fails the test,
//! naming file:line.

use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules, bottom to top. Modules of one rank may not reference
/// each other; `runtime` and `agent` are siblings where only
/// `agent -> runtime` is allowed, so `agent` ranks above `runtime`.
const LAYERS: &[&str] = &[
    "step", "workflow", "store", "engine", "runtime", "agent", "app", "server", "cli",
];

/// Known upward references still to be removed, as `file -> module`
/// (file relative to `host/src`). Empty: there are none, and a new one
/// fails the check. Each entry must still occur, so the list only shrinks.
const ALLOWED: &[&str] = &[];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| *layer == module)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read host/src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `engine/driver.rs` is `[engine, driver]`,
/// `engine/mod.rs` is `[engine]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules a line references, or an error for a form the
/// check cannot resolve.
fn referenced_modules(line: &str, own_path: &[String]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let mut at = 0;
    while at < line.len() {
        let rest = &line[at..];
        let preceded_by_ident = at > 0 && {
            let previous = bytes[at - 1] as char;
            previous.is_ascii_alphanumeric() || previous == '_' || previous == ':'
        };
        if !preceded_by_ident && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if after.starts_with('{') {
                return Err("grouped `crate::{…}` paths are not resolved by the layer check; write one path per module".into());
            }
            found.push(identifier_at(after).to_string());
            at += "crate::".len();
            continue;
        }
        if !preceded_by_ident && rest.starts_with("super::") {
            let mut path = own_path.to_vec();
            let mut tail = rest;
            while let Some(next) = tail.strip_prefix("super::") {
                path.pop();
                tail = next;
            }
            let top = match path.first() {
                Some(top) => top.clone(),
                None if tail.starts_with('{') => {
                    return Err("grouped `super::{…}` paths reaching the crate root are not resolved by the layer check".into());
                }
                None => identifier_at(tail).to_string(),
            };
            found.push(top);
            at += rest.len() - tail.len();
            continue;
        }
        at += rest.chars().next().map_or(1, char::len_utf8);
    }
    Ok(found)
}

#[test]
fn no_module_references_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );

    let mut violations = Vec::new();
    let mut seen_allowed = std::collections::BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let own_path = module_path(relative);
        let Some(own) = own_path.first() else {
            continue;
        };
        let Some(own_rank) = rank(own) else {
            violations.push(format!(
                "{}: top-level module `{own}` has no layer in LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("read source");
        for (index, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let code = code.split(" //").next().unwrap_or(code);
            let location = format!("{}:{}", relative.display(), index + 1);
            let modules = match referenced_modules(code, &own_path) {
                Ok(modules) => modules,
                Err(message) => {
                    violations.push(format!("{location}: {message}"));
                    continue;
                }
            };
            for module in modules {
                let Some(target_rank) = rank(&module) else {
                    continue;
                };
                if module == *own || target_rank < own_rank {
                    continue;
                }
                let key = format!("{} -> {module}", relative.display());
                if ALLOWED.contains(&key.as_str()) {
                    seen_allowed.insert(key);
                    continue;
                }
                violations.push(format!(
                    "{location}: `{own}` references `{module}`, which is not below it (layers: {})",
                    LAYERS.join(" < ")
                ));
            }
        }
    }
    for allowed in ALLOWED {
        if !seen_allowed.contains(*allowed) {
            violations.push(format!(
                "allow-list entry `{allowed}` no longer occurs; remove it from tests/layers.rs"
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "upward references ({}):\n{}",
        violations.len(),
        violations.join("\n")
    );
}
