//! Host-side bindings for the `wfhost:plugin/tool-policy` world: a policy
//! component exports `decide(tool-call-request) -> decision`.

wasmtime::component::bindgen!({
    world: "tool-policy",
    path: "../plugins/sdk/wit",
    // Async so a decision can be abandoned at its deadline even while the
    // guest waits in a WASI poll (a sync call could block for ever).
    exports: {
        default: async,
    },
});
