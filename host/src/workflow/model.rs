//! The workflow document: serde types shared by the YAML and JSON front ends.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`); the seeds'
//! spellings `key` (for `id`) and `dependencies` (for `needs`) are accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A whole workflow file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Human name of the workflow.
    pub name: String,
    /// Free-form version of the definition (a string or number in the file).
    #[serde(default, deserialize_with = "string_or_number")]
    pub version: Option<String>,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// Phases group steps for display; a step names its phase by id.
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// JSON Schema of the run's arguments (an object schema).
    #[serde(default)]
    pub args: Option<Value>,
    /// Run-wide settings.
    #[serde(default)]
    pub config: RunConfig,
    /// Extra step types: name → path of a `.wasm` component (relative to the
    /// workflow file).
    #[serde(default)]
    pub plugins: BTreeMap<String, String>,
    /// The steps; order in the file does not matter, `needs` does.
    pub steps: Vec<Step>,
}

/// A named group of steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Identifier steps refer to in `phase:`.
    #[serde(alias = "key")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What happens in this phase.
    #[serde(default)]
    pub description: Option<String>,
}

/// Run-wide settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// How many steps may run at once (default: 4).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// Default per-step timeout, e.g. `30s`, `10m` (default: 10m).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One node of the DAG.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id: letters, digits, `_` and `-`.
    #[serde(alias = "key")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What the step does.
    #[serde(default)]
    pub description: Option<String>,
    /// The phase this step belongs to (an id from `phases`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Step type: `script`, `function`, or a name from `plugins`. Defaults to
    /// `script` when `run` is given.
    #[serde(default, rename = "type")]
    pub step_type: Option<String>,
    /// For `type: function`: a built-in component name or a `.wasm` path.
    #[serde(default)]
    pub component: Option<String>,
    /// Steps that must complete before this one starts.
    #[serde(default, alias = "dependencies")]
    pub needs: Vec<String>,
    /// Plugin configuration; string values are templates.
    #[serde(default, rename = "with")]
    pub with: Option<Value>,
    /// Shorthand for a script step: the shell script to run (a template).
    #[serde(default)]
    pub run: Option<String>,
    /// What the step may touch; nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Per-attempt timeout, e.g. `30s`; overrides `config.timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Capabilities granted to a step. Deny by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Files and directories, relative to the workflow file or absolute.
    #[serde(default)]
    pub files: Vec<FileGrant>,
    /// Names of host environment variables passed to the step.
    #[serde(default)]
    pub env: Vec<String>,
    /// Programs the step may start through `process`.
    #[serde(default)]
    pub exec: Vec<String>,
}

/// One file grant line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Path relative to the workflow file, or absolute.
    pub path: String,
    /// `read` (default) or `read-write`.
    #[serde(default)]
    pub access: Access,
}

/// Access mode of a file grant.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read files and list directories.
    #[default]
    Read,
    /// Also create, modify and delete.
    #[serde(alias = "rw", alias = "write")]
    ReadWrite,
}

fn string_or_number<'de, D>(de: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = Option::<Value>::deserialize(de)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "version must be a string or number, not {other}"
        ))),
    }
}
