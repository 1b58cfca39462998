//! Waiting without holding an instance: [`suspend`] and [`resumed`].
//!
//! A plugin that must wait (for a timer, before polling again) can end its
//! call with [`suspend`]: the host drops the instance, waits, and calls
//! [`Plugin::run`](crate::Plugin::run) again with the same request, in a
//! fresh instance; [`resumed`] then returns the state the previous call
//! handed over. A suspended step holds no memory of its own and no thread,
//! so thousands can wait at once. The step's `timeout` counts the waits.
//! The wait is recorded: if the host process dies during it, `wfhost resume`
//! goes on with it, and the step's next attempt starts with the state.
//!
//! ```ignore
//! use std::time::Duration;
//! use wfhost_sdk::{resumed, suspend};
//!
//! fn run(req: Request) -> Result<Value, StepError> {
//!     let polls: u32 = resumed().map_or(0, |state| state.parse().unwrap_or(0));
//!     if !ready()? {
//!         // Everything else in memory is gone when `run` is called again.
//!         suspend(Duration::from_secs(30), (polls + 1).to_string());
//!     }
//!     Ok(json!({ "polls": polls }))
//! }
//! ```
//!
//! Needs a host with `wfhost:plugin@0.1.2`.

use std::time::Duration;

use crate::bindings::wfhost::plugin::host;

/// Most bytes of `state` the host accepts from [`suspend`] (64 KiB): a
/// larger state ends the step as failed.
pub const MAX_STATE: usize = 64 * 1024;

/// End this call now and be called again, with the same request, after
/// `wait`; the next call's [`resumed`] returns `state`. Does not return:
/// nothing after it runs, and nothing in memory survives it.
pub fn suspend(wait: Duration, state: impl AsRef<str>) -> ! {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    host::suspend(ms, state.as_ref());
    // The host ends the call inside `suspend`; a host that returned would
    // break the contract, and the step fails rather than go on.
    unreachable!("wfhost returned from `host.suspend`")
}

/// The state the previous call of this attempt handed to [`suspend`];
/// `None` in an attempt's first call.
pub fn resumed() -> Option<String> {
    host::resumed()
}
