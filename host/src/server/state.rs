//! What every handler shares.

use std::path::PathBuf;
use std::sync::Arc;

use crate::store::EngineStore;

/// The server's state: its home, config and store.
#[derive(Clone)]
pub struct ApiState {
    /// The wfhost home.
    pub home: Arc<PathBuf>,
    /// The host config file, if one was given.
    pub config: Option<Arc<PathBuf>>,
    /// The store.
    pub store: Arc<dyn EngineStore>,
    /// Whether requests need a bearer token (any bind but loopback).
    pub require_token: bool,
}
