//! Host-side bindings for the `wfhost:plugin/step` world.

wasmtime::component::bindgen!({
    world: "step",
    path: "../wit",
    imports: {
        "wfhost:plugin/process": async,
    },
    exports: {
        default: async,
    },
});

pub use self::wfhost::plugin::{host, process, types};
