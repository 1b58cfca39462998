//! `echo`: an example function-style plugin, the identity JSON transform.
//!
//! Its output is its config (`with:`), unchanged. That makes it the cheapest
//! possible step (used by the benchmarks) and a way to name or reshape values
//! along a chain:
//!
//! ```yaml
//! - id: pick
//!   type: function
//!   component: echo
//!   with:
//!     version: "{{ steps.build.output.version }}"
//!     tag: "v{{ args.release }}"
//! # later steps read steps.pick.output.version and steps.pick.output.tag
//! ```
//!
//! It logs nothing and imports nothing beyond what every component does.

use serde_json::{json, Value};
use wfhost_sdk::{Info, Plugin, Request, StepError};

struct Echo;

impl Plugin for Echo {
    fn describe() -> Info {
        Info::new(
            "echo",
            env!("CARGO_PKG_VERSION"),
            "Returns its config unchanged as the step's output (identity JSON transform).",
        )
        .schema(json!({}))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        Ok(req.config)
    }
}

wfhost_sdk::export_plugin!(Echo);
