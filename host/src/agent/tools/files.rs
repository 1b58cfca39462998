//! The file tools (`read_file`, `write_file`, `edit_file`, `list_dir`,
//! `search`), confined by the step's `files` grants through cap-std.

use std::path::PathBuf;

use super::{
    Call, ToolEnv, EDIT_MAX, READ_MAX, SEARCH_MAX_FILE, SEARCH_MAX_FILES, SEARCH_MAX_MATCHES,
};
use crate::runtime::host_files::{FileError, GrantedFiles};
use crate::step::bindings::tools::ToolError;

fn file_error(error: FileError) -> ToolError {
    match error {
        FileError::Denied { .. } => ToolError::Denied(error.to_string()),
        FileError::Io { .. } => ToolError::Failed(error.to_string()),
    }
}

pub(super) fn run_file_tool(env: &ToolEnv, call: Call) -> Result<String, ToolError> {
    let files = env
        .files
        .as_ref()
        .map_err(|e| ToolError::Failed(e.clone()))?;
    match call {
        Call::Read { path } => {
            let read = files.read(&path, READ_MAX).map_err(file_error)?;
            let mut text = String::from_utf8_lossy(&read.bytes).into_owned();
            if read.truncated {
                text.push_str(&format!(
                    "\n[read_file stopped at {READ_MAX} bytes: the file is larger]"
                ));
            }
            Ok(text)
        }
        Call::Write { path, content } => {
            files.write(&path, content.as_bytes()).map_err(file_error)?;
            Ok(format!("wrote {} bytes to {path}", content.len()))
        }
        Call::Edit { path, old, new } => {
            if old.is_empty() {
                return Err(ToolError::Failed(
                    "edit_file: `old` must not be empty".to_string(),
                ));
            }
            let read = files.read(&path, EDIT_MAX).map_err(file_error)?;
            if read.truncated {
                return Err(ToolError::Failed(format!(
                    "edit_file: '{path}' is larger than {EDIT_MAX} bytes, the most edit_file changes"
                )));
            }
            let text = String::from_utf8(read.bytes)
                .map_err(|_| ToolError::Failed(format!("edit_file: '{path}' is not UTF-8 text")))?;
            match text.matches(old.as_str()).count() {
                0 => Err(ToolError::Failed(format!(
                    "edit_file: the `old` text does not occur in '{path}'"
                ))),
                1 => {
                    let edited = text.replacen(old.as_str(), &new, 1);
                    files.write(&path, edited.as_bytes()).map_err(file_error)?;
                    Ok(format!("edited {path}: replaced 1 occurrence"))
                }
                n => Err(ToolError::Failed(format!(
                    "edit_file: the `old` text occurs {n} times in '{path}'; include more context so it occurs once"
                ))),
            }
        }
        Call::List { path } => {
            let names = files.list(&path).map_err(file_error)?;
            Ok(names.join("\n"))
        }
        Call::Search { pattern, path } => search(env, files, &pattern, path.as_deref()),
        Call::Exec { .. } | Call::HttpGet { .. } => {
            Err(ToolError::Failed("not a file tool".to_string()))
        }
    }
}

fn search(
    env: &ToolEnv,
    files: &GrantedFiles,
    pattern: &str,
    path: Option<&str>,
) -> Result<String, ToolError> {
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ToolError::Failed(format!("search: bad pattern: {e}")))?;
    let mut pending: Vec<PathBuf> = match path {
        Some(path) => vec![env.absolute(path)],
        None => env
            .grants
            .files
            .iter()
            .map(|(root, _)| root.clone())
            .collect(),
    };
    pending.reverse();
    let mut matches = Vec::new();
    let mut visited = 0usize;
    let mut truncated = false;
    while let Some(current) = pending.pop() {
        let text_path = current.to_string_lossy().into_owned();
        match files.list(&text_path) {
            Ok(names) => {
                for name in names.iter().rev() {
                    if name == ".git/" {
                        continue;
                    }
                    pending.push(current.join(name.trim_end_matches('/')));
                }
                continue;
            }
            Err(FileError::Denied { .. }) => continue,
            Err(FileError::Io { .. }) => {}
        }
        visited += 1;
        if visited > SEARCH_MAX_FILES {
            truncated = true;
            break;
        }
        let Ok(read) = files.read(&text_path, SEARCH_MAX_FILE) else {
            continue;
        };
        let bytes = read.bytes;
        if read.truncated || bytes.contains(&0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let shown = current
            .strip_prefix(&env.workdir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| current.display().to_string());
        for (number, line) in text.lines().enumerate() {
            if regex.is_match(line) {
                if matches.len() == SEARCH_MAX_MATCHES {
                    truncated = true;
                    break;
                }
                let line: String = line.chars().take(300).collect();
                matches.push(format!("{shown}:{}: {line}", number + 1));
            }
        }
        if truncated {
            break;
        }
    }
    if matches.is_empty() {
        return Ok("no matches".to_string());
    }
    let mut out = matches.join("\n");
    if truncated {
        out.push_str(&format!(
            "\n[search stopped at {SEARCH_MAX_MATCHES} matches or {SEARCH_MAX_FILES} files: narrow the pattern or the path]"
        ));
    }
    Ok(out)
}
