//! `wfhost plugin new NAME --lang rust|policy|python|js`: a plugin project that
//! builds and runs as generated — the crate, the WIT it is built against,
//! a unit test, a sample workflow with the grants it needs, a README with
//! the commands.
//!
//! The Rust SDK is written into the project (`wfhost-sdk/`, the copy this
//! binary was built with) until it is published, so the project needs
//! nothing from this repository.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::Invalid;
use crate::runtime::inspect::{PLUGIN_PACKAGE_VERSION, PLUGIN_WIT};

/// Arguments of `wfhost plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and `-`; also the
    /// project's directory.
    name: String,
    /// What to write: a step plugin in Rust, or a tool policy (Rust).
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the project (default: `./NAME`).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The kinds of project `plugin new` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Lang {
    /// A step plugin in Rust, on the wfhost SDK.
    Rust,
    /// A tool policy (`tool-policy` world) in Rust.
    Policy,
    /// A step plugin in Python, built with componentize-py.
    Python,
    /// A step plugin in JavaScript, built with componentize-js.
    Js,
}

/// The SDK's files, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    ("README.md", include_str!("../../../plugins/sdk/README.md")),
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    ("src/fs.rs", include_str!("../../../plugins/sdk/src/fs.rs")),
    (
        "src/log.rs",
        include_str!("../../../plugins/sdk/src/log.rs"),
    ),
    (
        "src/model.rs",
        include_str!("../../../plugins/sdk/src/model.rs"),
    ),
    (
        "src/process.rs",
        include_str!("../../../plugins/sdk/src/process.rs"),
    ),
    (
        "src/suspend.rs",
        include_str!("../../../plugins/sdk/src/suspend.rs"),
    ),
    (
        "src/tools.rs",
        include_str!("../../../plugins/sdk/src/tools.rs"),
    ),
    ("wit/plugin.wit", PLUGIN_WIT),
];

/// Run `wfhost plugin new`.
pub fn new(args: NewArgs) -> Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(Invalid(format!(
            "'{}' already exists and is not empty; choose another name or --dir",
            dir.display()
        ))
        .into());
    }
    let files = match args.lang {
        Lang::Rust => rust_step(&args.name),
        Lang::Policy => rust_policy(&args.name),
        Lang::Python => python_step(&args.name),
        Lang::Js => js_step(&args.name),
    };
    for (path, text) in &files {
        write(&dir.join(path), text)?;
    }
    let wasm = match args.lang {
        Lang::Python | Lang::Js => format!("{}.wasm", args.name),
        _ => wasm_path(&args.name),
    };
    let next = match args.lang {
        Lang::Js => format!(
            "cd {dir}\n  npm install\n  npm test\n  npm run build\n  wfhost plugin check {wasm}\n  \
             wfhost run workflow.yaml",
            dir = dir.display()
        ),
        Lang::Python => format!(
            "cd {dir}\n  pip install componentize-py\n  componentize-py -d wit -w step bindings .\n  \
             python3 -m unittest test_app\n  componentize-py -d wit -w step componentize app -o {wasm}\n  \
             wfhost plugin check {wasm}\n  wfhost run workflow.yaml",
            dir = dir.display()
        ),
        Lang::Policy => format!(
            "cd {dir}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  \
             wfhost plugin check {wasm} --world tool-policy\n  wfhost run workflow.yaml",
            dir = dir.display()
        ),
        Lang::Rust => format!(
            "cd {dir}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  \
             wfhost plugin check {wasm}\n  wfhost plugin call {wasm} --with '{{\"name\": \"you\"}}'\n  \
             wfhost run workflow.yaml",
            dir = dir.display()
        ),
    };
    super::say::err_line(&format!(
        "created {} ({} files, wfhost:plugin@{PLUGIN_PACKAGE_VERSION}); next:\n  {next}",
        dir.display(),
        files.len()
    ));
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name != "wfhost-sdk";
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "'{name}' is not a plugin name: use lowercase letters, digits and `-`, starting \
             with a letter (e.g. `word-count`)"
        ))
        .into())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create '{}'", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write '{}'", path.display()))
}

/// Where cargo puts the component.
fn wasm_path(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )
}

const RELEASE_PROFILE: &str = r#"
# Small components: wfhost compiles them for the machine on first use.
[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1
panic = "abort"
"#;

fn rust_step(name: &str) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "Cargo.toml".to_string(),
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A cdylib built for wasm32-wasip2 is linked into a component.
crate-type = ["cdylib"]

[dependencies]
wfhost-sdk = {{ path = "wfhost-sdk" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
{RELEASE_PROFILE}
# A project of its own, not part of an enclosing workspace.
[workspace]
"#
            ),
        ),
        (
            "src/lib.rs".to_string(),
            format!(
                r#"//! `{name}`: a wfhost step plugin. `with: {{ name: ... }}` → `{{ "greeting": ... }}`.

use serde::Deserialize;
use serde_json::{{json, Value}};
use wfhost_sdk::{{log, Info, Plugin, Request, StepError}};

/// The step's `with:` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {{
    name: String,
    #[serde(default)]
    shout: bool,
}}

/// What the step computes, kept apart from the plugin glue so a plain
/// `cargo test` checks it.
pub fn greeting(name: &str, shout: bool) -> String {{
    let text = format!("Hello, {{name}}!");
    if shout {{
        text.to_uppercase()
    }} else {{
        text
    }}
}}

struct Greet;

impl Plugin for Greet {{
    fn describe() -> Info {{
        Info::new("{name}", env!("CARGO_PKG_VERSION"), "Greets someone by name.").schema(json!({{
            "type": "object",
            "required": ["name"],
            "properties": {{
                "name": {{ "type": "string", "description": "Who to greet." }},
                "shout": {{ "type": "boolean", "description": "In capitals." }}
            }},
            "additionalProperties": false
        }}))
    }}

    fn run(request: Request) -> Result<Value, StepError> {{
        let config: Config = request.parse_config()?;
        log::info(format!("greeting {{}}", config.name));
        Ok(json!({{ "greeting": greeting(&config.name, config.shout) }}))
    }}
}}

wfhost_sdk::export_plugin!(Greet);

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn greets_and_shouts() {{
        assert_eq!(greeting("Ada", false), "Hello, Ada!");
        assert_eq!(greeting("Ada", true), "HELLO, ADA!");
    }}
}}
"#
            ),
        ),
        (
            "workflow.yaml".to_string(),
            format!(
                r#"# Runs the plugin once: `wfhost run workflow.yaml` (after building it).
name: {name}-demo
steps:
  - id: greet
    type: function
    component: {wasm}
    with: {{ name: world }}
    # This plugin needs no grants; a plugin that reads files or starts
    # programs lists them here, e.g. grants: {{ files: [./data], exec: [sh] }}
"#,
                wasm = wasm_path(name)
            ),
        ),
        (
            "README.md".to_string(),
            format!(
                r#"# {name}

A [wfhost](https://github.com/) step plugin, built against `wfhost:plugin@{PLUGIN_PACKAGE_VERSION}`
(`wfhost-sdk/wit/plugin.wit`; `wfhost plugin wit` prints the one your wfhost provides).

```sh
rustup target add wasm32-wasip2          # once
cargo test                               # the unit tests, natively
cargo build --release --target wasm32-wasip2
wfhost plugin check {wasm}
wfhost plugin call {wasm} --with '{{"name": "you"}}'
wfhost run workflow.yaml
```

`wfhost-sdk/` is the Rust SDK, copied here by `wfhost plugin new`.
"#,
                wasm = wasm_path(name)
            ),
        ),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    files.extend(
        SDK_FILES
            .iter()
            .map(|(path, text)| (format!("wfhost-sdk/{path}"), text.to_string())),
    );
    files
}

fn rust_policy(name: &str) -> Vec<(String, String)> {
    vec![
        (
            "Cargo.toml".to_string(),
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A cdylib built for wasm32-wasip2 is linked into a component (`tool-policy` world).
crate-type = ["cdylib"]

[dependencies]
serde_json = "1"
wit-bindgen = "0.63"
{RELEASE_PROFILE}
# A project of its own, not part of an enclosing workspace.
[workspace]
"#
            ),
        ),
        ("wit/plugin.wit".to_string(), PLUGIN_WIT.to_string()),
        (
            "src/lib.rs".to_string(),
            format!(
                r##"//! `{name}`: a wfhost tool policy. Denies every tool call whose arguments
//! mention one of the config's `words` (default: `secret`); everything else
//! is left to the next policy of the agent's chain.

mod bindings {{
    wit_bindgen::generate!({{ path: "wit", world: "tool-policy" }});
}}

use bindings::{{Decision, Guest, ToolCallRequest}};

struct Policy;

impl Guest for Policy {{
    fn decide(call: ToolCallRequest) -> Decision {{
        match check(&call.tool, &call.arguments, &call.config) {{
            Some(reason) => Decision::Deny(reason),
            None => Decision::Allow,
        }}
    }}
}}

bindings::export!(Policy with_types_in bindings);

/// `Some(reason)` to deny. `config` is the policy's `config:` as JSON; a
/// config that cannot be read denies (fail closed).
pub fn check(tool: &str, arguments: &str, config: &str) -> Option<String> {{
    let config: serde_json::Value = match config.trim() {{
        "" | "null" => serde_json::json!({{}}),
        text => match serde_json::from_str(text) {{
            Ok(value) => value,
            Err(error) => return Some(format!("{name}: invalid config ({{error}})")),
        }},
    }};
    let words: Vec<String> = match config.get("words") {{
        Some(serde_json::Value::Array(words)) => words
            .iter()
            .filter_map(|w| w.as_str().map(str::to_lowercase))
            .collect(),
        _ => vec!["secret".to_string()],
    }};
    let arguments = arguments.to_lowercase();
    words
        .iter()
        .find(|word| !word.is_empty() && arguments.contains(word.as_str()))
        .map(|word| format!("{name}: `{{tool}}` may not touch anything named like '{{word}}'"))
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn denies_what_mentions_a_word() {{
        assert!(check("read_file", r#"{{"path": "secret.txt"}}"#, "").is_some());
        assert!(check("read_file", r#"{{"path": "notes.txt"}}"#, "").is_none());
        let config = r#"{{"words": ["draft"]}}"#;
        assert!(check("read_file", r#"{{"path": "DRAFT.md"}}"#, config).is_some());
        assert!(check("read_file", r#"{{"path": "x"}}"#, "not json").is_some());
    }}
}}
"##
            ),
        ),
        (
            "workflow.yaml".to_string(),
            format!(
                r#"# An agent (played offline by the `scripted` provider: replies.yaml) tries to
# read secret.txt, which this policy denies, then reads notes.txt.
# `wfhost run workflow.yaml` after building the policy.
name: {name}-demo
agents:
  - id: reader
    role: You read files.
    model: {{ provider: scripted, script: replies.yaml }}
    tools: [read]
    policy:
      - plugin: {wasm}
        config: {{ words: [secret] }}
steps:
  - id: read
    type: agent
    agent: reader
    prompt: Read the notes.
    max_turns: 4
    grants:
      files: [{{ path: ., access: read }}]
"#,
                wasm = wasm_path(name)
            ),
        ),
        (
            "replies.yaml".to_string(),
            r#"# What the scripted model answers, one entry per model call.
- tool_calls:
    - name: read_file
      arguments: { path: secret.txt }
- tool_calls:
    - name: read_file
      arguments: { path: notes.txt }
- content: "The notes say: remember the milk. (secret.txt was refused.)"
"#
            .to_string(),
        ),
        ("notes.txt".to_string(), "remember the milk\n".to_string()),
        ("secret.txt".to_string(), "the password\n".to_string()),
        (
            "README.md".to_string(),
            format!(
                r#"# {name}

A [wfhost](https://github.com/) tool policy (world `tool-policy` of
`wfhost:plugin@{PLUGIN_PACKAGE_VERSION}`, `wit/plugin.wit`).

```sh
rustup target add wasm32-wasip2          # once
cargo test                               # the unit tests, natively
cargo build --release --target wasm32-wasip2
wfhost plugin check {wasm} --world tool-policy
wfhost run workflow.yaml
```
"#,
                wasm = wasm_path(name)
            ),
        ),
        (".gitignore".to_string(), "/target\n".to_string()),
    ]
}

fn python_step(name: &str) -> Vec<(String, String)> {
    vec![
        ("wit/plugin.wit".to_string(), PLUGIN_WIT.to_string()),
        (
            "app.py".to_string(),
            format!(
                r#""""{name}: a wfhost step plugin in Python. `with: {{name: ...}}` -> {{"greeting": ...}}.

Built with componentize-py against wit/plugin.wit (world `step`); the
`wit_world` module is generated by `componentize-py -d wit -w step bindings .`.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

SCHEMA = {{
    "type": "object",
    "required": ["name"],
    "properties": {{
        "name": {{"type": "string", "description": "Who to greet."}},
        "shout": {{"type": "boolean", "description": "In capitals."}},
    }},
    "additionalProperties": False,
}}


def greeting(name: str, shout: bool = False) -> str:
    """What the step computes, apart from the plugin glue (see test_app.py)."""
    text = f"Hello, {{name}}!"
    return text.upper() if shout else text


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            "{name}", "0.1.0", "Greets someone by name.", json.dumps(SCHEMA)
        )

    def run(self, request: types.StepRequest) -> str:
        config = json.loads(request.config)
        name = config.get("name")
        if not isinstance(name, str):
            # A permanent error is not retried; StepError_Transient may be.
            raise Err(types.StepError_Permanent("`name` must be a string"))
        host.log(host.LogLevel.INFO, f"greeting {{name}}")
        return json.dumps({{"greeting": greeting(name, bool(config.get("shout", False)))}})
"#
            ),
        ),
        (
            "test_app.py".to_string(),
            r#"import unittest

from app import greeting


class GreetingTest(unittest.TestCase):
    def test_greets_and_shouts(self):
        self.assertEqual(greeting("Ada"), "Hello, Ada!")
        self.assertEqual(greeting("Ada", shout=True), "HELLO, ADA!")


if __name__ == "__main__":
    unittest.main()
"#
            .to_string(),
        ),
        (
            "workflow.yaml".to_string(),
            format!(
                r#"# Runs the plugin once: `wfhost run workflow.yaml` (after building it).
# The first run compiles the ~18 MB component for this machine (seconds;
# `wfhost plugin check {name}.wasm` does it ahead), later runs take it from the cache.
name: {name}-demo
steps:
  - id: greet
    type: function
    component: {name}.wasm
    with: {{ name: world }}
"#
            ),
        ),
        (
            "README.md".to_string(),
            format!(
                r#"# {name}

A [wfhost](https://github.com/) step plugin in Python, built with
[componentize-py](https://github.com/bytecodealliance/componentize-py) against
`wfhost:plugin@{PLUGIN_PACKAGE_VERSION}` (`wit/plugin.wit`; `wfhost plugin wit` prints the one
your wfhost provides).

```sh
pip install componentize-py
componentize-py -d wit -w step bindings .     # the `wit_world` module (tests, editors)
python3 -m unittest test_app                   # the unit test
componentize-py -d wit -w step componentize app -o {name}.wasm
wfhost plugin check {name}.wasm                # compiles it (~18 MB: seconds, once) and checks it
wfhost plugin call {name}.wasm --with '{{"name": "you"}}'
wfhost run workflow.yaml
```

The component embeds CPython (~18 MB). It may import only what wfhost provides:
WASI 0.2 (cli, clocks, filesystem, io, random, sockets) and `wfhost:plugin`.
"#
            ),
        ),
        (
            ".gitignore".to_string(),
            "/wit_world/\n/componentize_py_*\n/poll_loop.py\n/*.wasm\n__pycache__/\n".to_string(),
        ),
    ]
}

/// The componentize-js version the JavaScript template pins.
const COMPONENTIZE_JS: &str = "0.23.0";

fn js_step(name: &str) -> Vec<(String, String)> {
    vec![
        ("wit/plugin.wit".to_string(), PLUGIN_WIT.to_string()),
        (
            "package.json".to_string(),
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "test": "node --test",
    "build": "componentize-js app.js --wit wit --world-name step --disable http fetch-event -o {name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}"
  }}
}}
"#
            ),
        ),
        (
            "greeting.js".to_string(),
            r#"// What the step computes, apart from the plugin glue (see greeting.test.js).
export function greeting(name, shout = false) {
  const text = `Hello, ${name}!`;
  return shout ? text.toUpperCase() : text;
}
"#
            .to_string(),
        ),
        (
            "greeting.test.js".to_string(),
            r#"import { test } from "node:test";
import assert from "node:assert/strict";
import { greeting } from "./greeting.js";

test("greets and shouts", () => {
  assert.equal(greeting("Ada"), "Hello, Ada!");
  assert.equal(greeting("Ada", true), "HELLO, ADA!");
});
"#
            .to_string(),
        ),
        (
            "app.js".to_string(),
            format!(
                r#"// {name}: a wfhost step plugin in JavaScript (world `step` of wit/plugin.wit).
// `with: {{ name: ... }}` -> {{ "greeting": ... }}
//
// Built by `npm run build` (componentize-js) with `--disable http fetch-event`:
// wfhost provides no wasi:http, which componentize-js imports by default.
import {{ log }} from "wfhost:plugin/host@{PLUGIN_PACKAGE_VERSION}";
import {{ greeting }} from "./greeting.js";

const SCHEMA = {{
  type: "object",
  required: ["name"],
  properties: {{
    name: {{ type: "string", description: "Who to greet." }},
    shout: {{ type: "boolean", description: "In capitals." }},
  }},
  additionalProperties: false,
}};

export function describe() {{
  return {{
    name: "{name}",
    version: "0.1.0",
    description: "Greets someone by name.",
    configSchema: JSON.stringify(SCHEMA),
  }};
}}

export function run(request) {{
  const config = JSON.parse(request.config);
  if (typeof config.name !== "string") {{
    // A thrown value is the result's error: `permanent` is not retried,
    // `transient` may be.
    throw {{ tag: "permanent", val: "`name` must be a string" }};
  }}
  log("info", `greeting ${{config.name}}`);
  return JSON.stringify({{ greeting: greeting(config.name, Boolean(config.shout)) }});
}}
"#
            ),
        ),
        (
            "workflow.yaml".to_string(),
            format!(
                r#"# Runs the plugin once: `wfhost run workflow.yaml` (after `npm run build`).
# The first run compiles the ~12 MB component for this machine (seconds;
# `wfhost plugin check {name}.wasm` does it ahead), later runs take it from the cache.
name: {name}-demo
steps:
  - id: greet
    type: function
    component: {name}.wasm
    with: {{ name: world }}
"#
            ),
        ),
        (
            "README.md".to_string(),
            format!(
                r#"# {name}

A [wfhost](https://github.com/) step plugin in JavaScript, built with
[componentize-js](https://github.com/bytecodealliance/ComponentizeJS) against
`wfhost:plugin@{PLUGIN_PACKAGE_VERSION}` (`wit/plugin.wit`; `wfhost plugin wit` prints the one
your wfhost provides).

```sh
npm install                                    # componentize-js {COMPONENTIZE_JS}
npm test                                       # the unit test (node --test)
npm run build                                  # {name}.wasm
wfhost plugin check {name}.wasm                # compiles it (~12 MB: seconds, once) and checks it
wfhost plugin call {name}.wasm --with '{{"name": "you"}}'
wfhost run workflow.yaml
```

The build disables componentize-js's `http` and `fetch-event` features: wfhost provides
WASI 0.2 (cli, clocks, filesystem, io, random, sockets) and `wfhost:plugin`, no `wasi:http`.
"#
            ),
        ),
        (
            ".gitignore".to_string(),
            "/node_modules/\n/*.wasm\n".to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["greet", "word-count", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Greet", "1x", "a_b", "a-", "wfhost-sdk", "../x", "a b"] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("is not a plugin name"), "{bad}: {error}");
        }
    }

    /// A project gets every source file of the SDK (a new module left out
    /// would break every generated project's build).
    #[test]
    fn every_sdk_source_file_is_copied() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        for entry in std::fs::read_dir(&sdk).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("src/{name}");
            assert!(
                SDK_FILES.iter().any(|(copied, _)| *copied == path),
                "{path} is not in SDK_FILES"
            );
        }
    }
}
