//! Built-in components embedded in the binary.
//!
//! `host/build.rs` compiles the guest crates under `plugins/` for
//! `wasm32-wasip2` and this module embeds the resulting components. Every
//! built-in is a `step`-world component (`wit/plugin.wit`) and may be named
//! anywhere a component is expected: `script` backs `type: script` and the
//! `run:` shorthand; `wordcount` and `echo` are function-style examples usable
//! as `type: function` with `component: wordcount` / `component: echo`
//! (`script` works there too, it is just an ordinary component).
//!
//! The bytes are component binaries, not precompiled code: the runtime
//! compiles each one once (and caches it) like any `.wasm` a workflow names.

/// A component compiled into the `wfhost` binary.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinComponent {
    /// The name workflows use (`type: script`, `component: echo`).
    pub name: &'static str,
    /// One sentence for listings.
    pub description: &'static str,
    /// The component binary (`wasm32-wasip2`, `step` world).
    pub wasm: &'static [u8],
}

/// Every built-in component, sorted by name.
pub const BUILTINS: &[BuiltinComponent] = &[
    BuiltinComponent {
        name: "echo",
        description: "Returns its config unchanged as the step's output (identity JSON transform).",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/echo.wasm")),
    },
    BuiltinComponent {
        name: "script",
        description: "Runs a shell script through `process`; output is exit_code, stdout, stderr \
                      and the key=value lines written to $WFHOST_OUTPUT.",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/script.wasm")),
    },
    BuiltinComponent {
        name: "wordcount",
        description: "Counts lines, words and bytes of a text and/or files (directories walked \
                      recursively).",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/wordcount.wasm")),
    },
];

/// The built-in component called `name`, if any.
pub fn builtin(name: &str) -> Option<&'static BuiltinComponent> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Names of all built-in components, sorted.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::Component;
    use wasmtime::{Config, Engine};

    #[test]
    fn lookup_by_name() {
        assert_eq!(names(), vec!["echo", "script", "wordcount"]);
        assert_eq!(builtin("script").map(|b| b.name), Some("script"));
        assert!(builtin("nope").is_none());
    }

    /// Every built-in is a valid component exporting `describe` and `run` and
    /// importing the wfhost interfaces it needs (plus WASI).
    #[test]
    fn builtins_are_step_components() {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).expect("engine");
        for b in BUILTINS {
            assert!(!b.wasm.is_empty(), "{} is empty", b.name);
            let component = Component::new(&engine, b.wasm)
                .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", b.name));
            let ty = component.component_type();
            let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
            for name in ["describe", "run"] {
                assert!(
                    exports.iter().any(|e| e == name),
                    "{}: exports {exports:?}",
                    b.name
                );
            }
            assert!(
                matches!(
                    ty.get_export(&engine, "run").map(|e| e.ty),
                    Some(ComponentItem::ComponentFunc(_))
                ),
                "{}: `run` is not a function",
                b.name
            );
            let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
            assert!(
                imports.iter().any(|i| i == "wfhost:plugin/host@0.1.0"),
                "{}: imports {imports:?}",
                b.name
            );
            if b.name == "script" {
                assert!(imports.iter().any(|i| i == "wfhost:plugin/process@0.1.0"));
            }
        }
    }
}
