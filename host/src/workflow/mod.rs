//! Workflow files: model, parsing, validation, graph, templates.
//!
//! Pure code: the only I/O is reading the workflow file ([`load_with`]) and
//! checking that the `.wasm` files it names exist.
//!
//! Data flow: [`load_with()`] reads a file, [`parse_str`] turns it into the
//! [`Workflow`] model, [`validate()`] checks it and builds its [`Graph`];
//! [`Templates`] render step configuration at run time, and
//! [`resolve_args`] checks a run's arguments against the `args` schema.

pub mod args;
pub mod compare;
pub mod diag;
mod forms;
pub mod graph;
pub mod lint;
pub mod load;
pub(crate) mod locate;
pub mod model;
pub mod parse;
pub mod reach;
pub mod seeds;
pub mod template;
pub mod validate;

pub use args::{coerce_cli_arg, resolve_args};
pub use diag::{Diagnostic, Diagnostics};
pub use load::{
    load_from_source, load_from_source_with, load_with, parse_duration, LoadedWorkflow,
};
pub use model::Step;
pub use parse::Format;
pub use template::Templates;
pub use validate::{step_kind, StepKind};
