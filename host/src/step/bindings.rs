//! Host-side bindings for the `wfhost:plugin/step` world.

wasmtime::component::bindgen!({
    world: "step",
    path: "../plugins/sdk/wit",
    imports: {
        "wfhost:plugin/process": async,
        "wfhost:plugin/model": async,
        "wfhost:plugin/tools": async,
        // Ends the guest's call: the host returns a trap the runtime
        // recognises (see `runtime::suspend`).
        "wfhost:plugin/host.suspend": trappable,
    },
    exports: {
        default: async,
    },
});

pub use self::wfhost::plugin::{host, model, process, tools, types};
