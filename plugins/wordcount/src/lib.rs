//! `wordcount`: an example function-style plugin. Counts lines, words and
//! bytes, like `wc`, of a text and/or files.
//!
//! Config:
//!
//! ```yaml
//! paths: [src, README.md]   # files or directories (walked recursively),
//!                           # relative to the workflow's directory
//! extensions: [rs, md]      # only count files found in directories with
//!                           # these extensions (named files always count)
//! text: "some words"        # a text to count as well
//! ```
//!
//! At least one of `paths` and `text` is required. Output:
//!
//! ```json
//! { "files": 2, "lines": 10, "words": 42, "bytes": 300,
//!   "per_file": [ { "path": "src/lib.rs", "lines": 8, "words": 40, "bytes": 290 }, ... ] }
//! ```
//!
//! Totals include `text`; `per_file` lists only files, with paths as given
//! (a directory's files as `<dir as given>/<relative path>`). Lines are
//! counted as `str::lines` does (a last line without a line break counts),
//! words are runs of non-whitespace. Reading a file outside the step's
//! `files` grants fails with a message naming the grant to add.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wfhost_sdk::{fs, log, progress, Info, Plugin, Request, StepError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    extensions: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Counts {
    lines: u64,
    words: u64,
    bytes: u64,
}

impl Counts {
    fn of(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        Counts {
            lines: text.lines().count() as u64,
            words: text.split_whitespace().count() as u64,
            bytes: bytes.len() as u64,
        }
    }

    fn add(&mut self, other: Counts) {
        self.lines += other.lines;
        self.words += other.words;
        self.bytes += other.bytes;
    }
}

#[derive(Debug, Serialize)]
struct FileCounts {
    path: String,
    #[serde(flatten)]
    counts: Counts,
}

struct WordCount;

impl Plugin for WordCount {
    fn describe() -> Info {
        Info::new(
            "wordcount",
            env!("CARGO_PKG_VERSION"),
            "Counts lines, words and bytes of a text and/or files (directories walked \
             recursively, optionally filtered by extension).",
        )
        .schema(json!({
            "type": "object",
            "additionalProperties": false,
            "anyOf": [ { "required": ["paths"] }, { "required": ["text"] } ],
            "properties": {
                "paths": { "type": "array", "items": { "type": "string" },
                           "description": "Files or directories, relative to the workflow's directory." },
                "text": { "type": "string", "description": "A text to count." },
                "extensions": { "type": "array", "items": { "type": "string" },
                                "description": "Only count files found in directories with these extensions." }
            }
        }))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        let config: Config = req.parse_config()?;
        if config.paths.is_empty() && config.text.is_none() {
            return Err(StepError::permanent(
                "invalid config: give `paths` (files or directories) and/or `text`",
            ));
        }
        let extensions: Vec<String> = config
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_string())
            .collect();

        let mut total = Counts::default();
        if let Some(text) = &config.text {
            total.add(Counts::of(text.as_bytes()));
        }

        let mut per_file = Vec::new();
        for (i, given) in config.paths.iter().enumerate() {
            let root = fs::resolve(&req, given);
            for file in fs::walk(&req, given)? {
                let is_root = file == root;
                if !is_root && !has_extension(&file, &extensions) {
                    continue;
                }
                let counts = Counts::of(&fs::read(&req, &file)?);
                total.add(counts);
                per_file.push(FileCounts {
                    path: shown_path(given, &root, &file),
                    counts,
                });
            }
            progress(
                format!("counted {given}"),
                (i + 1) as f32 / config.paths.len() as f32,
            );
        }
        log::info(format!(
            "{} files: {} lines, {} words, {} bytes",
            per_file.len(),
            total.lines,
            total.words,
            total.bytes
        ));
        Ok(json!({
            "files": per_file.len(),
            "lines": total.lines,
            "words": total.words,
            "bytes": total.bytes,
            "per_file": per_file,
        }))
    }
}

wfhost_sdk::export_plugin!(WordCount);

fn has_extension(file: &Path, extensions: &[String]) -> bool {
    extensions.is_empty()
        || file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x == e))
}

/// `file` as the user would name it: `given` for the path itself, else
/// `given/<path below it>`.
fn shown_path(given: &str, root: &Path, file: &Path) -> String {
    match file.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            Path::new(given).join(rel).to_string_lossy().into_owned()
        }
        _ => given.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_wc() {
        assert_eq!(
            Counts::of(b"hello world\nsecond line here\n"),
            Counts {
                lines: 2,
                words: 5,
                bytes: 29
            }
        );
        assert_eq!(
            Counts::of(b"no newline"),
            Counts {
                lines: 1,
                words: 2,
                bytes: 10
            }
        );
        assert_eq!(Counts::of(b""), Counts::default());
    }

    #[test]
    fn shows_paths_as_given() {
        let root = Path::new("/w/src");
        assert_eq!(
            shown_path("src", root, Path::new("/w/src/a/b.rs")),
            "src/a/b.rs"
        );
        assert_eq!(
            shown_path("./src/", root, Path::new("/w/src/b.rs")),
            "./src/b.rs"
        );
        assert_eq!(shown_path("src", root, root), "src");
        assert!(has_extension(Path::new("a.rs"), &["rs".into()]));
        assert!(!has_extension(Path::new("a.md"), &["rs".into()]));
        assert!(has_extension(Path::new("a.md"), &[]));
    }
}
