//! Built-in components embedded in the binary.
//!
//! `host/build.rs` compiles the guest crates under `plugins/` for
//! `wasm32-wasip2` and this module embeds the resulting components, in two
//! lists:
//!
//! - [`BUILTINS`]: `step`-world components (`plugins/sdk/wit/plugin.wit`), which may be
//!   named anywhere a component is expected: `script` backs `type: script`
//!   and the `run:` shorthand, `agent` backs `type: agent`; `wordcount`,
//!   `echo` and `sleep` are function-style components usable as `type:
//!   function` with `component: wordcount` / `echo` / `sleep` (`script` works
//!   there too, it is just an ordinary component). [`names`] lists these.
//! - [`POLICIES`]: `tool-policy`-world components, loaded by the host's
//!   policy chain, never run as steps: `rules-policy` backs an agent's
//!   `policy: [{ rules: {...} }]` entries (its config is the rules object),
//!   `example-policy` is the "no-secrets" example of a third-party policy.
//!   [`policy`] and [`policy_names`] cover these.
//!
//! [`builtin`] finds a component of either list by name (names are unique
//! across both).
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
    /// The component binary (`wasm32-wasip2`; `step` world in [`BUILTINS`],
    /// `tool-policy` world in [`POLICIES`]).
    pub wasm: &'static [u8],
}

/// Every built-in step component (`step` world), sorted by name.
pub const BUILTINS: &[BuiltinComponent] = &[
    BuiltinComponent {
        name: "agent",
        description: "Runs an AI agent: model turns and policy-checked tool calls until a final \
                      answer (text, or JSON checked against output_schema).",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/agent.wasm")),
    },
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
        name: "sleep",
        description: "Waits `ms` milliseconds on a host timer, then returns its config as the \
                      output.",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/sleep.wasm")),
    },
    BuiltinComponent {
        name: "wordcount",
        description: "Counts lines, words and bytes of a text and/or files (directories walked \
                      recursively).",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/wordcount.wasm")),
    },
];

/// Every built-in tool-policy component (`tool-policy` world), sorted by
/// name. The `.wasm` files are named after the crates (`rules_policy.wasm`).
pub const POLICIES: &[BuiltinComponent] = &[
    BuiltinComponent {
        name: "example-policy",
        description: "Example third-party policy \"no-secrets\": denies calls whose arguments \
                      mention .env, id_rsa, .ssh/, credentials or config `extra_patterns`.",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/example_policy.wasm")),
    },
    BuiltinComponent {
        name: "rules-policy",
        description: "The built-in `rules` policy: allow / ask / deny lists of `tool(specifier)` \
                      rules; deny before ask before allow; unmatched calls ask.",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/rules_policy.wasm")),
    },
];

/// The built-in component called `name`, if any: a step component of
/// [`BUILTINS`] or a policy of [`POLICIES`] (names are unique across both).
/// Use [`policy`] to accept policies only.
pub fn builtin(name: &str) -> Option<&'static BuiltinComponent> {
    BUILTINS.iter().chain(POLICIES).find(|b| b.name == name)
}

/// Names of all built-in step components, sorted.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

/// The built-in tool-policy component called `name`, if any.
pub fn policy(name: &str) -> Option<&'static BuiltinComponent> {
    POLICIES.iter().find(|b| b.name == name)
}

#[cfg(test)]
/// Names of all built-in tool-policy components, sorted.
pub fn policy_names() -> Vec<&'static str> {
    POLICIES.iter().map(|b| b.name).collect()
}
