//! Loading a workflow: read the file, parse it, validate it.

use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, Diagnostics, Location};
use super::graph::Graph;
use super::model::Workflow;
use super::parse::{parse_str, Format};
use super::seeds::{normalize, HomeAgents, Reading};
use super::validate::validate;

/// A parsed and validated workflow with what is needed to run it.
#[derive(Debug, Clone)]
pub struct LoadedWorkflow {
    /// The workflow file (absolute and canonical when loaded with [`load`]).
    pub path: PathBuf,
    /// The absolute, canonical directory of the file; relative paths in the
    /// workflow (plugins, components, file grants) are resolved against it.
    pub dir: PathBuf,
    /// The file name as the user gave it, for messages.
    pub file_name: String,
    /// The exact text that was parsed (the run's definition snapshot).
    pub source: String,
    /// The parsed definition.
    pub def: Workflow,
    /// The step graph (acyclic, ids unique).
    pub graph: Graph,
    /// How the seed systems' spellings in the file were read (see
    /// [`super::seeds`]); empty for a file in wfhost's own form.
    pub readings: Vec<Reading>,
}

impl LoadedWorkflow {
    /// The step with this id (found through the graph's index, not a
    /// search of the list).
    pub fn step(&self, id: &str) -> Option<&crate::workflow::model::Step> {
        self.def.steps.get(self.graph.index_of(id)?)
    }
}

/// Reads, parses and validates the workflow at `path` (without home
/// agents: see [`load_with`]).
#[cfg(test)]
pub fn load(path: &Path, builtin_components: &[&str]) -> Result<LoadedWorkflow, Diagnostics> {
    load_with(path, builtin_components, None)
}

/// Reads, parses and validates the workflow at `path`, taking the agents
/// its steps name but it does not define from `home_agents` (the home's
/// agents file).
///
/// `builtin_components` are the component names `type: function` steps may
/// use without a `.wasm` path.
pub fn load_with(
    path: &Path,
    builtin_components: &[&str],
    home_agents: Option<&HomeAgents>,
) -> Result<LoadedWorkflow, Diagnostics> {
    let file_name = path.display().to_string();
    let read_error = |e: std::io::Error| -> Diagnostics {
        Diagnostic::new(format!("cannot read the workflow file: {e}"))
            .at(Location::file(&file_name))
            .into()
    };
    let source = read_bounded(path).map_err(|problem| {
        Diagnostics::from(Diagnostic::new(problem).at(Location::file(&file_name)))
    })?;
    let canonical = path.canonicalize().map_err(read_error)?;
    let dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut loaded = load_from_source_with(
        &source,
        &file_name,
        &dir,
        Format::from_path(path),
        builtin_components,
        home_agents,
    )?;
    loaded.path = canonical;
    Ok(loaded)
}

/// The largest workflow file wfhost reads, in bytes.
pub const MAX_WORKFLOW_BYTES: u64 = 4 << 20;

/// The text of the workflow file at `path`, refusing a file over
/// [`MAX_WORKFLOW_BYTES`] (checked on the opened handle, before reading, and
/// by the read itself) and one that is not UTF-8.
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read the workflow file: {e}"))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("cannot read the workflow file: {e}"))?;
    if metadata.is_dir() {
        return Err("cannot read the workflow file: it is a directory".to_string());
    }
    let too_big = |size: u64| {
        format!(
            "the workflow file is {size} bytes; workflow files are limited to {} MiB",
            MAX_WORKFLOW_BYTES >> 20
        )
    };
    if metadata.len() > MAX_WORKFLOW_BYTES {
        return Err(too_big(metadata.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_WORKFLOW_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the workflow file: {e}"))?;
    if bytes.len() as u64 > MAX_WORKFLOW_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the workflow file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Parses and validates `source` as if it were the file `file_name` in
/// directory `dir` (e.g. a run's stored snapshot). `path` is set to `dir`
/// joined with the last component of `file_name`.
pub fn load_from_source(
    source: &str,
    file_name: &str,
    dir: &Path,
    format: Format,
    builtin_components: &[&str],
) -> Result<LoadedWorkflow, Diagnostics> {
    load_from_source_with(source, file_name, dir, format, builtin_components, None)
}

/// [`load_from_source`], with the home's agents (see [`load_with`]).
pub fn load_from_source_with(
    source: &str,
    file_name: &str,
    dir: &Path,
    format: Format,
    builtin_components: &[&str],
    home_agents: Option<&HomeAgents>,
) -> Result<LoadedWorkflow, Diagnostics> {
    let mut def = parse_str(source, file_name, format)?;
    let mut readings = super::seeds::alias_readings(source, format);
    readings.extend(normalize(&mut def, source, file_name, home_agents)?);
    let graph = validate(&def, source, file_name, dir, builtin_components)?;
    let base = Path::new(file_name)
        .file_name()
        .map_or_else(|| PathBuf::from(file_name), PathBuf::from);
    Ok(LoadedWorkflow {
        path: dir.join(base),
        dir: dir.to_path_buf(),
        file_name: file_name.to_string(),
        source: source.to_string(),
        def,
        graph,
        readings,
    })
}

pub use crate::step::units::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_are_bounded_and_overflow_is_an_error() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for huge in ["500000000000y", "99999999999999999999999s", "101y"] {
            let error = parse_duration(huge).unwrap_err();
            assert!(
                error.starts_with(&format!("invalid duration '{huge}'")),
                "{error}"
            );
        }
        assert!(parse_duration("100y").is_ok());
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
    }

    #[test]
    fn loads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wf.yml");
        std::fs::write(&path, "name: x\nsteps:\n  - {id: a, run: echo}\n").unwrap();
        let loaded = load(&path, &[]).unwrap();
        let canonical_dir = dir.path().canonicalize().unwrap();
        assert_eq!(loaded.dir, canonical_dir);
        assert_eq!(loaded.path, canonical_dir.join("wf.yml"));
        assert_eq!(loaded.file_name, path.display().to_string());
        assert_eq!(loaded.def.name, "x");
        assert_eq!(loaded.graph.len(), 1);
        assert!(loaded.source.starts_with("name: x"));
    }

    #[test]
    fn loads_json_by_extension_and_resolves_components_in_its_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let path = dir.path().join("wf.json");
        std::fs::write(
            &path,
            r#"{"name": "j", "steps": [{"id": "a", "type": "function", "component": "f.wasm"}]}"#,
        )
        .unwrap();
        let loaded = load(&path, &[]).unwrap();
        assert_eq!(loaded.def.steps[0].component.as_deref(), Some("f.wasm"));
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load(Path::new("/no/such/wf.yaml"), &[]).unwrap_err();
        assert_eq!(err.len(), 1);
        let text = err.to_string();
        assert!(
            text.starts_with("/no/such/wf.yaml: cannot read the workflow file: "),
            "{text}"
        );
    }

    #[test]
    fn invalid_files_give_all_diagnostics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "name: x\nsteps:\n  - {id: a, needs: [b]}\n").unwrap();
        let err = load(&path, &[]).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        let file = path.display().to_string();
        assert!(err.to_string().contains(&format!("{file}:3:")), "{err}");
    }

    #[test]
    fn load_from_source_uses_the_given_dir() {
        let loaded = load_from_source(
            "name: s\nsteps:\n  - {id: a, type: function, component: wc}\n",
            "snap/wf.yaml",
            Path::new("/tmp/x"),
            Format::Yaml,
            &["wc"],
        )
        .unwrap();
        assert_eq!(loaded.path, PathBuf::from("/tmp/x/wf.yaml"));
        assert_eq!(loaded.dir, PathBuf::from("/tmp/x"));
        assert_eq!(loaded.file_name, "snap/wf.yaml");
        let err = load_from_source(
            "name: s\nsteps: [}",
            "s.yaml",
            Path::new("/"),
            Format::Yaml,
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("s.yaml:2:"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 10m "), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        let e = parse_duration("soon").unwrap_err();
        assert!(e.starts_with("invalid duration 'soon': "), "{e}");
        assert!(e.ends_with("(expected e.g. 30s, 10m, 1h)"), "{e}");
        assert!(parse_duration("30").unwrap_err().contains("'30'"));
        assert_eq!(
            parse_duration("0s").unwrap_err(),
            "invalid duration '0s': must be more than zero"
        );
        assert!(parse_duration("").is_err());
    }
}
