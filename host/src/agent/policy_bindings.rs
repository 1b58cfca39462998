//! Host-side bindings for the `wfhost:plugin/tool-policy` world: a policy
//! component exports `decide(tool-call-request) -> decision`.

wasmtime::component::bindgen!({
    world: "tool-policy",
    path: "../wit",
});
