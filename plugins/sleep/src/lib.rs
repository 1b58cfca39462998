//! `sleep`: waits on a host timer, then returns its config.
//!
//! ```yaml
//! - id: settle
//!   type: function
//!   component: sleep
//!   with: { ms: 1500 }
//! ```
//!
//! The wait is a `host.suspend`: the host drops the step's instance and
//! waits on a timer of its own, so a sleeping step holds no memory of its
//! own and no thread, and thousands can wait at once (the benchmark's
//! memory workload). The step's `timeout` still applies.

use serde_json::{json, Value};
use wfhost_sdk::{Info, Plugin, Request, StepError};

/// The longest wait accepted, in milliseconds (one day).
const MAX_MS: u64 = 24 * 60 * 60 * 1000;

struct Sleep;

impl Plugin for Sleep {
    fn describe() -> Info {
        Info::new(
            "sleep",
            env!("CARGO_PKG_VERSION"),
            "Waits `ms` milliseconds on a host timer, then returns its config as the output.",
        )
        .schema(json!({
            "type": "object",
            "required": ["ms"],
            "properties": {
                "ms": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_MS,
                    "description": "How long to wait, in milliseconds."
                }
            }
        }))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        let ms = req
            .config
            .get("ms")
            .and_then(Value::as_u64)
            .filter(|ms| *ms <= MAX_MS)
            .ok_or_else(|| {
                StepError::permanent(format!(
                    "invalid config: `ms` must be an integer from 0 to {MAX_MS}"
                ))
            })?;
        // The first call waits, suspended; the call after the wait ends.
        if ms > 0 && wfhost_sdk::resumed().is_none() {
            wfhost_sdk::suspend(std::time::Duration::from_millis(ms), "waited");
        }
        Ok(req.config)
    }
}

wfhost_sdk::export_plugin!(Sleep);
