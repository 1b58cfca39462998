//! The plugin author's toolbox through the real binary: `wfhost plugin wit`,
//! `check`, `call` and `new` (projects generated, built and run), the SDK
//! packaged and used from outside the repository, and `wfhost validate`
//! checking every component a workflow names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn stdout(output: &std::process::Output) -> String {
    text(&output.stdout)
}

fn stderr(output: &std::process::Output) -> String {
    text(&output.stderr)
}

/// A built-in component's `.wasm`, as the build left it.
fn built(name: &str) -> PathBuf {
    repo().join(format!(
        "target/wasm-plugins/wasm32-wasip2/release/{name}.wasm"
    ))
}

#[test]
fn plugin_wit_prints_and_writes_the_contract_the_binary_provides() {
    let sandbox = Sandbox::new();
    let printed = sandbox.wfhost(&["plugin", "wit"]);
    assert_exit(&printed, 0);
    let wit = std::fs::read_to_string(repo().join("plugins/sdk/wit/plugin.wit")).unwrap();
    assert_eq!(stdout(&printed), wit);
    assert!(wit.contains("package wfhost:plugin@0.1.2;"));
    let written = sandbox.wfhost(&["plugin", "wit", "--out", "contract"]);
    assert_exit(&written, 0);
    assert!(
        stderr(&written).contains("wfhost:plugin@0.1.2"),
        "{}",
        stderr(&written)
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("contract/plugin.wit")).unwrap(),
        wit
    );
}

#[test]
fn plugin_check_tells_the_world_the_imports_and_the_config_schema() {
    let sandbox = Sandbox::new();
    let sleep = sandbox.wfhost(&["plugin", "check", "sleep"]);
    assert_exit(&sleep, 0);
    let out = stdout(&sleep);
    assert!(out.contains("a step plugin (world `step`)"), "{out}");
    assert!(out.contains("plugin: sleep"), "{out}");
    assert!(out.contains("ok       wfhost:plugin/host@0.1.2"), "{out}");
    assert!(
        out.contains("\"ms\""),
        "the config schema is printed: {out}"
    );
    assert!(
        out.contains("compiled for this machine and cached"),
        "{out}"
    );

    let policy = built("example_policy");
    let json = sandbox.wfhost(&["plugin", "check", policy.to_str().unwrap(), "--json"]);
    assert_exit(&json, 0);
    let report: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(report["world"], "tool-policy");
    assert_eq!(report["valid"], true);
    assert_eq!(report["exports"], serde_json::json!(["decide"]));
    assert!(report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .all(|import| import["provided"] == true));
}

#[test]
fn plugin_check_names_what_keeps_a_component_from_running() {
    let sandbox = Sandbox::new();
    let check = |file: &str, extra: &[&str]| {
        let mut args = vec!["plugin", "check", file];
        args.extend_from_slice(extra);
        let output = sandbox.wfhost(&args);
        assert_exit(&output, 2);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    sandbox.write("garbage.wasm", "not wasm at all");
    assert!(check("garbage.wasm", &[]).contains("is not a WebAssembly file"));
    std::fs::write(sandbox.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    assert!(check("core.wasm", &[]).contains("is a core WebAssembly module, not a component"));
    assert!(check("missing.wasm", &[]).contains("cannot read component 'missing.wasm'"));

    let newer =
        wat::parse_str(r#"(component (import "wfhost:plugin/host@0.2.0" (instance)))"#).unwrap();
    std::fs::write(sandbox.path().join("newer.wasm"), newer).unwrap();
    let err = check("newer.wasm", &[]);
    assert!(
        err.contains("built against wfhost:plugin@0.2.0; this wfhost provides 0.1.x"),
        "{err}"
    );
    let http =
        wat::parse_str(r#"(component (import "wasi:http/types@0.2.0" (instance)))"#).unwrap();
    std::fs::write(sandbox.path().join("http.wasm"), http).unwrap();
    let err = check("http.wasm", &[]);
    assert!(
        err.contains("wasi:http/types@0.2.0") && err.contains("no wasi:http"),
        "{err}"
    );
    let listed = stdout(&sandbox.wfhost(&["plugin", "check", "http.wasm"]));
    assert!(
        listed.contains("MISSING  wasi:http/types@0.2.0"),
        "{listed}"
    );

    let policy = built("example_policy");
    let err = check(policy.to_str().unwrap(), &["--world", "step"]);
    assert!(err.contains("it is a tool policy"), "{err}");
    let step = built("echo");
    let err = check(step.to_str().unwrap(), &["--world", "tool-policy"]);
    assert!(err.contains("it is a step plugin"), "{err}");
}

#[test]
fn validate_checks_every_component_and_each_with_against_its_schema() {
    let sandbox = Sandbox::new();
    std::fs::copy(built("echo"), sandbox.path().join("step.wasm")).unwrap();
    std::fs::copy(built("example_policy"), sandbox.path().join("policy.wasm")).unwrap();
    sandbox.write("replies.yaml", "- content: done\n");
    let workflow = |policy: &str, plugin: &str, ms: &str| {
        format!(
            r#"name: checked
plugins:
  mine: {plugin}
agents:
  - id: a
    role: r
    model: {{ provider: scripted, script: replies.yaml }}
    tools: [read]
    policy:
      - plugin: {policy}
steps:
  - id: nap
    type: function
    component: sleep
    with: {{ ms: {ms} }}
  - id: mine
    type: mine
  - id: ask
    type: agent
    agent: a
    prompt: hi
"#
        )
    };
    let good = sandbox.write("good.yaml", &workflow("policy.wasm", "step.wasm", "5"));
    assert_exit(&sandbox.wfhost(&["validate", good.to_str().unwrap()]), 0);
    assert_exit(
        &sandbox.wfhost(&["validate", "--precompile", good.to_str().unwrap()]),
        0,
    );
    // A template waits for the run.
    let templated = sandbox.write(
        "templated.yaml",
        &workflow("policy.wasm", "step.wasm", "\"{{ 2 * 3 }}\""),
    );
    assert_exit(
        &sandbox.wfhost(&["validate", templated.to_str().unwrap()]),
        0,
    );

    let bad = sandbox.write("bad.yaml", &workflow("step.wasm", "policy.wasm", "soon"));
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    let err = stderr(&output);
    assert!(
        err.contains("bad.yaml:15:5: step 'nap': `with:` does not fit the config schema of 'sleep': /ms: \"soon\" is not of type \"integer\""),
        "{err}"
    );
    assert!(
        err.contains("step 'mine': component 'policy.wasm': it is a tool policy"),
        "{err}"
    );
    assert!(
        err.contains("agent 'a': policy 'step.wasm': it is a step plugin"),
        "{err}"
    );
    // `run` refuses the step component given as a policy too, before any
    // step runs (it would deny every tool call of a run that succeeds).
    let run_bad = sandbox.write("run-bad.yaml", &workflow("step.wasm", "step.wasm", "5"));
    let output = sandbox.wfhost(&["run", run_bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("agent 'a': policy 'step.wasm'"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn plugin_call_runs_one_plugin_alone_with_its_grants() {
    let sandbox = Sandbox::new();
    let echo = sandbox.wfhost(&["plugin", "call", "echo", "--with", r#"{"a": [1, 2]}"#]);
    assert_exit(&echo, 0);
    let output: Value = serde_json::from_str(&stdout(&echo)).unwrap();
    assert_eq!(output, serde_json::json!({ "a": [1, 2] }));

    sandbox.write("notes/a.txt", "one two three\n");
    let denied = sandbox.wfhost(&[
        "plugin",
        "call",
        "wordcount",
        "--with",
        r#"{"paths": ["notes/a.txt"]}"#,
        "-q",
    ]);
    assert_exit(&denied, 1);
    assert!(
        stderr(&denied).starts_with("error: "),
        "{}",
        stderr(&denied)
    );
    let counted = sandbox.wfhost(&[
        "plugin",
        "call",
        "wordcount",
        "--with",
        r#"{"paths": ["notes/a.txt"]}"#,
        "--grant",
        "files=notes",
        "-q",
    ]);
    assert_exit(&counted, 0);
    let output: Value = serde_json::from_str(&stdout(&counted)).unwrap();
    assert_eq!(output["words"], 3, "{output}");

    let bad = sandbox.wfhost(&["plugin", "call", "sleep", "--with", r#"{"ms": "x"}"#, "-q"]);
    assert_exit(&bad, 1);
    assert!(
        stderr(&bad).contains("`ms` must be an integer"),
        "{}",
        stderr(&bad)
    );
    let not_json = sandbox.wfhost(&["plugin", "call", "echo", "--with", "{oops"]);
    assert_exit(&not_json, 2);
    assert!(stderr(&not_json).contains("--with is not valid JSON"));
    let grant = sandbox.wfhost(&["plugin", "call", "echo", "--grant", "disk=all"]);
    assert_exit(&grant, 2);
    assert!(stderr(&grant).contains("--grant 'disk=all': unknown grant"));
}

/// `cargo` with what the outer `cargo test` set for its own build removed,
/// building into a target directory shared by the tests of this file.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", repo().join("target/plugin-projects"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo {args:?} in {} failed:\n{}",
        dir.display(),
        stderr(&output)
    );
    output
}

/// Generate a project with `plugin new`, pin its dependencies to the
/// versions this repository's plugins use (so the build works offline and
/// shares compiled crates), then test and build it.
fn new_project(sandbox: &Sandbox, name: &str, lang: &str) -> PathBuf {
    let created = sandbox.wfhost(&["plugin", "new", name, "--lang", lang]);
    assert_exit(&created, 0);
    assert!(stderr(&created).contains("cargo build --release --target wasm32-wasip2"));
    let dir = sandbox.path().join(name);
    std::fs::copy(repo().join("plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    cargo(&dir, &["test", "--offline", "--quiet"]);
    cargo(
        &dir,
        &[
            "build",
            "--offline",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
        ],
    );
    let again = sandbox.wfhost(&["plugin", "new", name, "--lang", lang]);
    assert_exit(&again, 2);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    dir
}

#[test]
fn a_new_rust_plugin_builds_checks_calls_and_runs_as_generated() {
    let sandbox = Sandbox::new();
    let dir = new_project(&sandbox, "greet", "rust");
    let wasm = repo().join("target/plugin-projects/wasm32-wasip2/release/greet.wasm");
    // The workflow names the component where cargo puts it by default.
    let local = dir.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(&wasm, local.join("greet.wasm")).unwrap();
    let wasm = local.join("greet.wasm");
    let check = sandbox.wfhost(&["plugin", "check", wasm.to_str().unwrap()]);
    assert_exit(&check, 0);
    assert!(
        stdout(&check).contains("plugin: greet 0.1.0"),
        "{}",
        stdout(&check)
    );
    let call = sandbox.wfhost(&[
        "plugin",
        "call",
        wasm.to_str().unwrap(),
        "--with",
        r#"{"name": "Ada", "shout": true}"#,
        "-q",
    ]);
    assert_exit(&call, 0);
    let output: Value = serde_json::from_str(&stdout(&call)).unwrap();
    assert_eq!(output["greeting"], "HELLO, ADA!");
    let run = sandbox.wfhost(&[
        "run",
        dir.join("workflow.yaml").to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(status["steps"][0]["output"]["greeting"], "Hello, world!");
    // The SDK the project carries is a package of its own.
    assert!(dir.join("wfhost-sdk/wit/plugin.wit").is_file());
    assert_exit(&sandbox.wfhost(&["plugin", "new", "Bad_Name"]), 2);
}

#[test]
fn a_new_policy_builds_and_denies_in_a_run_as_generated() {
    let sandbox = Sandbox::new();
    let dir = new_project(&sandbox, "no-secret", "policy");
    let wasm = repo().join("target/plugin-projects/wasm32-wasip2/release/no_secret.wasm");
    let local = dir.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(&wasm, local.join("no_secret.wasm")).unwrap();
    let check = sandbox.wfhost(&[
        "plugin",
        "check",
        local.join("no_secret.wasm").to_str().unwrap(),
        "--world",
        "tool-policy",
    ]);
    assert_exit(&check, 0);
    let run = sandbox.wfhost(&[
        "run",
        dir.join("workflow.yaml").to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    let run_id = status["id"].as_str().unwrap();
    let logs = stdout(&sandbox.wfhost(&["logs", run_id]));
    assert!(
        logs.contains("no-secret: `read_file` may not touch anything named like 'secret'"),
        "{logs}"
    );
    assert!(
        status["steps"][0]["output"]
            .to_string()
            .contains("remember the milk"),
        "{status}"
    );
}

#[test]
fn the_sdk_packages_and_builds_outside_the_repository() {
    let sdk = repo().join("plugins/sdk");
    // The package itself (its build is checked below, outside the
    // repository, so cargo's own verification build is skipped here).
    cargo(
        &sdk,
        &[
            "package",
            "--allow-dirty",
            "--offline",
            "--no-verify",
            "--quiet",
        ],
    );
    let packaged = repo().join("target/plugin-projects/package/wfhost-sdk-0.1.0.crate");
    assert!(packaged.is_file(), "{} was not written", packaged.display());
    let listed = cargo(&sdk, &["package", "--list", "--allow-dirty", "--offline"]);
    let files = stdout(&listed);
    for file in ["Cargo.toml", "src/lib.rs", "wit/plugin.wit", "README.md"] {
        assert!(
            files.lines().any(|line| line == file),
            "{file} not packaged:\n{files}"
        );
    }
    // A plugin in a directory of its own that depends on the SDK by path.
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"outside\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nwfhost-sdk = {{ path = {:?} }}\n\
             serde_json = \"1\"\n\n[workspace]\n",
            sdk.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        r#"use serde_json::{json, Value};
use wfhost_sdk::{Info, Plugin, Request, StepError};
struct Outside;
impl Plugin for Outside {
    fn describe() -> Info { Info::new("outside", "0.1.0", "Built outside the repository.") }
    fn run(request: Request) -> Result<Value, StepError> {
        Ok(json!({ "seen": request.config }))
    }
}
wfhost_sdk::export_plugin!(Outside);
"#,
    )
    .unwrap();
    std::fs::copy(repo().join("plugins/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    cargo(
        dir,
        &[
            "build",
            "--offline",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
        ],
    );
    let wasm = repo().join("target/plugin-projects/wasm32-wasip2/release/outside.wasm");
    let sandbox = Sandbox::new();
    let call = sandbox.wfhost(&[
        "plugin",
        "call",
        wasm.to_str().unwrap(),
        "--with",
        r#"{"x": 1}"#,
        "-q",
    ]);
    assert_exit(&call, 0);
    let output: Value = serde_json::from_str(&stdout(&call)).unwrap();
    assert_eq!(output["seen"]["x"], 1);
}

#[test]
fn any_exported_function_is_callable_with_with_converted_by_wit_types() {
    let sandbox = Sandbox::new();
    std::fs::copy(test_plugin("functions"), sandbox.path().join("fn.wasm")).unwrap();
    let kinds = "acme:functions/kinds@0.1.0";
    let step = |id: &str, function: &str, with: &str| {
        format!(
            "  - id: {id}\n    type: function\n    component: fn.wasm\n    function: \"{function}\"\n    with: {with}\n"
        )
    };
    let mut steps = String::new();
    for (id, function, with) in [
        ("ping", "ping".to_string(), "{}"),
        ("shout", format!("{kinds}#shout"), "{ text: hi }"),
        ("add", format!("{kinds}#add"), "{ a: -5, b: 7 }"),
        (
            "move",
            format!("{kinds}#move-point"),
            "{ p: { x: 1, y: 2, label: a }, dx: 5 }",
        ),
        (
            "nolabel",
            format!("{kinds}#move-point"),
            "{ p: { x: 1, y: 2 }, dx: 1 }",
        ),
        ("circle", format!("{kinds}#area"), "{ s: { circle: 2.0 } }"),
        ("empty", format!("{kinds}#area"), "{ s: empty }"),
        ("color", format!("{kinds}#next-color"), "{ c: blue }"),
        ("flags", format!("{kinds}#toggle"), "{ p: [read] }"),
        ("first", format!("{kinds}#first"), "{ items: [] }"),
        ("divide", format!("{kinds}#divide"), "{ a: 7, b: 2 }"),
        ("swap", format!("{kinds}#swap"), "{ t: [x, true] }"),
        ("char", format!("{kinds}#upper"), "{ c: q }"),
        ("list", format!("{kinds}#shapes"), "{ count: 3 }"),
        (
            "templated",
            format!("{kinds}#shout"),
            "{ text: \"{{ 'x' ~ 'y' }}\" }",
        ),
    ] {
        steps.push_str(&step(id, &function, with));
    }
    let flow = sandbox.write("fn.yaml", &format!("name: fn\nsteps:\n{steps}"));
    assert_exit(&sandbox.wfhost(&["validate", flow.to_str().unwrap()]), 0);
    let run = sandbox.wfhost(&["run", flow.to_str().unwrap(), "--json", "-q"]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    let output = |id: &str| {
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["output"]
            .clone()
    };
    use serde_json::json;
    assert_eq!(output("ping"), json!("pong"));
    assert_eq!(output("shout"), json!("HI"));
    assert_eq!(output("add"), json!(2));
    assert_eq!(output("move"), json!({ "x": 6, "y": 2, "label": "a'" }));
    assert_eq!(output("nolabel"), json!({ "x": 2, "y": 2, "label": null }));
    assert_eq!(output("circle"), json!(12.0));
    assert_eq!(output("empty"), json!(0.0));
    assert_eq!(output("color"), json!("red"));
    assert_eq!(output("flags"), json!(["write", "exec"]));
    assert_eq!(output("first"), json!(null));
    assert_eq!(output("divide"), json!(3));
    assert_eq!(output("swap"), json!([true, "x"]));
    assert_eq!(output("char"), json!("Q"));
    assert_eq!(
        output("list"),
        json!([{ "circle": 0.0 }, { "square": 1 }, "empty"])
    );
    assert_eq!(output("templated"), json!("XY"));

    // What does not fit is named at validation: the parameter's path and
    // the WIT type it wanted.
    let invalid = |with: &str, function: &str| {
        let flow = sandbox.write(
            "bad.yaml",
            &format!("name: bad\nsteps:\n{}", step("s", function, with)),
        );
        let output = sandbox.wfhost(&["validate", flow.to_str().unwrap()]);
        assert_exit(&output, 2);
        stderr(&output)
    };
    let err = invalid(
        "{ p: { x: one, y: 2 }, dx: 1 }",
        &format!("{kinds}#move-point"),
    );
    assert!(
        err.contains("bad.yaml:6:5: step 's': component 'fn.wasm': `with:` does not fit `acme:functions/kinds@0.1.0#move-point`: `p.x`: expected s32, got the string \"one\""),
        "{err}"
    );
    let err = invalid("{ count: 300 }", &format!("{kinds}#shapes"));
    assert!(err.contains("`count`: 300 is out of range for u8"), "{err}");
    let err = invalid("{ a: 1 }", &format!("{kinds}#divide"));
    assert!(err.contains("missing parameter `b` (u32)"), "{err}");
    let err = invalid("{ s: { hexagon: 1 } }", &format!("{kinds}#area"));
    assert!(
        err.contains("`s`: expected variant { circle(f64), square(u32), empty }"),
        "{err}"
    );
    let err = invalid("{}", "nope");
    assert!(
        err.contains(
            "exports no function `nope`; it exports: ping, acme:functions/kinds@0.1.0#shout"
        ),
        "{err}"
    );
    let err = invalid("{ text: x, extra: 1 }", &format!("{kinds}#shout"));
    assert!(
        err.contains("no parameter `extra` (the parameters are: text)"),
        "{err}"
    );

    // An `err` result fails the step with the error.
    let flow = sandbox.write(
        "zero.yaml",
        &format!(
            "name: zero\nsteps:\n{}",
            step("d", &format!("{kinds}#divide"), "{ a: 1, b: 0 }")
        ),
    );
    let run = sandbox.wfhost(&["run", flow.to_str().unwrap(), "--json", "-q"]);
    assert_exit(&run, 1);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(
        status["steps"][0]["error"],
        "`acme:functions/kinds@0.1.0#divide` returned an error: division by zero"
    );
    // A result that could swell past the host's budget once lifted (each
    // byte of a list<u8> becomes a host value) is refused before the call,
    // naming the memory grant under which it fits.
    let flow = sandbox.write(
        "bytes.yaml",
        &format!(
            "name: b\nsteps:\n{}",
            step("b", &format!("{kinds}#bytes"), "{ count: 3 }")
        ),
    );
    let run = sandbox.wfhost(&["run", flow.to_str().unwrap(), "--json", "-q"]);
    assert_exit(&run, 1);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    let error = status["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("returns a list whose 1-byte elements"),
        "{error}"
    );
    assert!(
        error.contains("give the step `grants: { memory: "),
        "{error}"
    );
    let flow = sandbox.write(
        "bytes-small.yaml",
        &format!(
            "name: b\nsteps:\n{}    grants: {{ memory: 16MiB }}\n",
            step("b", &format!("{kinds}#bytes"), "{ count: 3 }")
        ),
    );
    let run = sandbox.wfhost(&["run", flow.to_str().unwrap(), "--json", "-q"]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(status["steps"][0]["output"], json!([0, 1, 2]));
    // `plugin call --function` calls one alone.
    let called = sandbox.wfhost(&[
        "plugin",
        "call",
        "fn.wasm",
        "--function",
        &format!("{kinds}#add"),
        "--with",
        r#"{"a": 40, "b": 2}"#,
        "-q",
    ]);
    assert_exit(&called, 0);
    assert_eq!(stdout(&called).trim(), "42");
    // `function:` belongs to function steps only.
    let flow = sandbox.write(
        "misplaced.yaml",
        "name: m\nsteps:\n  - id: a\n    run: 'true'\n    function: ping\n",
    );
    let output = sandbox.wfhost(&["validate", flow.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("`function` is only for `type: function` steps"));
}

/// Whether `program` is on PATH. A missing toolchain skips the test, loudly,
/// except under `CI=true` (where `.ci/run` installs it): there it fails.
fn toolchain(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `{program}` is not installed (.ci/run installs it)"
        );
        eprintln!("skipped: `{program}` is not installed");
    }
    found
}

/// Run `program args` in `dir`; it must succeed.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// `plugin call` and `run workflow.yaml` of a generated project.
fn call_and_run(sandbox: &Sandbox, dir: &Path, wasm: &str) {
    let wasm = dir.join(wasm);
    let call = sandbox.wfhost(&[
        "plugin",
        "call",
        wasm.to_str().unwrap(),
        "--with",
        r#"{"name": "Ada", "shout": true}"#,
        "-q",
    ]);
    assert_exit(&call, 0);
    let output: Value = serde_json::from_str(&stdout(&call)).unwrap();
    assert_eq!(output["greeting"], "HELLO, ADA!");
    let bad = sandbox.wfhost(&[
        "plugin",
        "call",
        wasm.to_str().unwrap(),
        "--with",
        r#"{"name": 3}"#,
        "-q",
    ]);
    assert_exit(&bad, 1);
    assert!(
        stderr(&bad).contains("`name` must be a string"),
        "{}",
        stderr(&bad)
    );
    let run = sandbox.wfhost(&[
        "run",
        dir.join("workflow.yaml").to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert_exit(&run, 0);
    let status: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(status["steps"][0]["output"]["greeting"], "Hello, world!");
}

/// `plugin new NAME --lang LANG` in the sandbox, checked to be exactly
/// `plugins/examples/NAME` (the examples are what the binary writes);
/// the generated folder.
fn example_as_generated(sandbox: &Sandbox, name: &str, lang: &str) -> PathBuf {
    assert_exit(&sandbox.wfhost(&["plugin", "new", name, "--lang", lang]), 0);
    let generated = sandbox.path().join(name);
    let example = repo().join("plugins/examples").join(name);
    let files = |root: &Path| {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(root).unwrap().to_path_buf();
                    found.push((relative, std::fs::read(&path).unwrap()));
                }
            }
        }
        found.sort();
        found
    };
    assert!(
        files(&generated) == files(&example),
        "plugins/examples/{name} differs from what `wfhost plugin new {name} --lang {lang}` \
         writes: regenerate it"
    );
    generated
}

#[test]
fn the_python_example_is_what_plugin_new_writes_and_builds_and_runs() {
    if !toolchain("componentize-py") {
        return;
    }
    let sandbox = Sandbox::new();
    let dir = example_as_generated(&sandbox, "py-greet", "python");
    run_in(
        &dir,
        "componentize-py",
        &["-d", "wit", "-w", "step", "bindings", "."],
    );
    run_in(&dir, "python3", &["-m", "unittest", "test_app"]);
    let build = [
        "-d",
        "wit",
        "-w",
        "step",
        "componentize",
        "app",
        "-o",
        "py-greet.wasm",
    ];
    run_in(&dir, "componentize-py", &build);
    call_and_run(&sandbox, &dir, "py-greet.wasm");
}

#[test]
fn the_javascript_example_is_what_plugin_new_writes_and_builds_and_runs() {
    if !toolchain("componentize-js") || !toolchain("npm") {
        return;
    }
    let sandbox = Sandbox::new();
    let dir = example_as_generated(&sandbox, "js-greet", "js");
    run_in(&dir, "npm", &["test"]);
    // `npm run build` finds componentize-js on PATH (`.ci/run` installs it
    // globally; a user's `npm install` puts it in node_modules/.bin).
    run_in(&dir, "npm", &["run", "build"]);
    let wasm = dir.join("js-greet.wasm");
    let check = sandbox.wfhost(&["plugin", "check", wasm.to_str().unwrap()]);
    assert_exit(&check, 0);
    assert!(!stdout(&check).contains("wasi:http"), "{}", stdout(&check));
    call_and_run(&sandbox, &dir, "js-greet.wasm");
}
