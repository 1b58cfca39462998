//! What a component file is, told before anything runs it: which world it
//! implements, what it imports against what wfhost provides (each WASI
//! interface and each `wfhost:plugin` interface, by name and version), and
//! what it exports. `wfhost plugin check` prints it; `wfhost validate`
//! refuses a workflow whose components do not fit.

use std::fmt;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The version of the `wfhost:plugin` package this binary provides.
pub const PLUGIN_PACKAGE_VERSION: &str = "0.1.2";

/// The WIT package this binary provides, as one file (`wfhost plugin wit`).
pub const PLUGIN_WIT: &str = include_str!("../../../plugins/sdk/wit/plugin.wit");

/// WASI 0.2 interfaces a step or policy may import (wasmtime-wasi 48
/// provides 0.2.12; an import of any 0.2.x up to that links).
const WASI_PROVIDED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/insecure-seed",
    "wasi:random/insecure",
    "wasi:random/random",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
];
/// Newest WASI 0.2 patch version provided.
const WASI_PATCH: u32 = 12;

/// `wfhost:plugin` interfaces a step may import.
const STEP_INTERFACES: &[&str] = &["types", "host", "process", "model", "tools"];
/// `wfhost:plugin` interfaces a policy may import (types only).
const POLICY_INTERFACES: &[&str] = &["policy-types"];

/// The world a component implements, told by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `describe` and `run`: a step plugin.
    Step,
    /// `decide`: a tool policy.
    ToolPolicy,
    /// Neither: a component whose functions `type: function` +
    /// `function:` can call.
    Functions,
}

impl World {
    /// The world's name in the WIT package (or `functions`).
    pub fn name(self) -> &'static str {
        match self {
            World::Step => "step",
            World::ToolPolicy => "tool-policy",
            World::Functions => "functions",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One import of a component and whether wfhost provides it.
#[derive(Debug, Clone)]
pub struct Import {
    /// The import's full name, e.g. `wasi:io/streams@0.2.3`.
    pub name: String,
    /// `None` when provided; else why not.
    pub missing: Option<String>,
}

/// What [`inspect`] found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The world, by its exports.
    pub world: World,
    /// Every import, with whether it is provided (for `world`).
    pub imports: Vec<Import>,
    /// Every exported function (`name` or `interface#name`).
    pub exports: Vec<String>,
}

impl Inspection {
    /// One line per import that wfhost does not provide.
    pub fn problems(&self) -> Vec<String> {
        self.imports
            .iter()
            .filter_map(|import| {
                import
                    .missing
                    .as_ref()
                    .map(|why| format!("imports {}: {why}", import.name))
            })
            .collect()
    }
}

/// Why `bytes` cannot be a component at all, told from the header: not
/// WebAssembly, or a core module (built for `wasm32-wasip1` or not yet
/// made a component). `None` when the header is a component's.
pub fn not_a_component(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE: &[u8] = &[1, 0, 0, 0];
    if !bytes.starts_with(MAGIC) {
        let start: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Some(format!(
            "is not a WebAssembly file: it starts with bytes [{start}], not `\\0asm`"
        ));
    }
    if bytes.get(4..8) == Some(CORE) {
        return Some(
            "is a core WebAssembly module, not a component: build it for `wasm32-wasip2` (or \
             wrap it with `wasm-tools component new`)"
                .to_string(),
        );
    }
    None
}

/// Compile-free facts about `component`: its world and imports.
pub fn inspect(engine: &Engine, component: &Component) -> Inspection {
    let ty = component.component_type();
    let mut exports = Vec::new();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(_) => exports.push(name.to_string()),
            ComponentItem::ComponentInstance(instance) => {
                for (function, item) in instance.exports(engine) {
                    if matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                        exports.push(format!("{name}#{function}"));
                    }
                }
            }
            _ => {}
        }
    }
    let has = |name: &str| exports.iter().any(|e| e == name);
    let world = if has("run") && has("describe") {
        World::Step
    } else if has("decide") {
        World::ToolPolicy
    } else {
        World::Functions
    };
    let imports = ty
        .imports(engine)
        .map(|(name, _)| Import {
            name: name.to_string(),
            missing: why_missing(name, world),
        })
        .collect();
    Inspection {
        world,
        imports,
        exports,
    }
}

/// Why `name` is not provided to a component of `world`, or `None`.
fn why_missing(name: &str, world: World) -> Option<String> {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    if let Some(interface) = path.strip_prefix("wfhost:plugin/") {
        let ours = PLUGIN_PACKAGE_VERSION;
        let (major_minor, _) = ours.rsplit_once('.').unwrap_or((ours, ""));
        match version {
            Some(version) if !same_minor(version, major_minor) => {
                return Some(format!(
                    "built against wfhost:plugin@{version}; this wfhost provides {major_minor}.x \
                     ({ours}): rebuild the plugin with this wfhost's WIT (`wfhost plugin wit`)"
                ))
            }
            Some(version) if newer_patch(version, ours) => {
                return Some(format!(
                    "built against wfhost:plugin@{version}, newer than this wfhost's {ours}: \
                     update wfhost, or rebuild the plugin with `wfhost plugin wit`"
                ))
            }
            _ => {}
        }
        let allowed = match world {
            World::Step | World::Functions => STEP_INTERFACES,
            World::ToolPolicy => POLICY_INTERFACES,
        };
        if !allowed.contains(&interface) {
            return Some(format!(
                "a {world} component gets {}",
                allowed
                    .iter()
                    .map(|i| format!("wfhost:plugin/{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return None;
    }
    if path.starts_with("wasi:") {
        if !WASI_PROVIDED.contains(&path) {
            return Some(
                "not provided by wfhost (it provides WASI 0.2's cli, clocks, filesystem, io, \
                 random and sockets; no wasi:http: a step reaches the network through sockets \
                 under its `network` grant)"
                    .to_string(),
            );
        }
        return match version {
            Some(version) if !version.starts_with("0.2.") => Some(format!(
                "WASI {version} is not provided (wfhost provides 0.2.0 to 0.2.{WASI_PATCH})"
            )),
            Some(version) if newer_patch(version, &format!("0.2.{WASI_PATCH}")) => Some(format!(
                "WASI {version} is newer than the 0.2.{WASI_PATCH} wfhost provides"
            )),
            _ => None,
        };
    }
    Some("not provided by wfhost (it provides WASI 0.2 and wfhost:plugin interfaces)".to_string())
}

/// Whether `version` is `major_minor.*` (e.g. `0.1.0` of `0.1`).
fn same_minor(version: &str, major_minor: &str) -> bool {
    version
        .strip_prefix(major_minor)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `version`'s patch is above `ours`'s (same major.minor assumed).
fn newer_patch(version: &str, ours: &str) -> bool {
    let patch = |v: &str| {
        v.rsplit('.')
            .next()
            .and_then(|p| p.split(['-', '+']).next())
            .and_then(|p| p.parse::<u32>().ok())
    };
    matches!((patch(version), patch(ours)), (Some(a), Some(b)) if a > b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_that_are_no_component_are_named() {
        assert!(not_a_component(b"garbage!")
            .unwrap()
            .contains("not a WebAssembly file"));
        assert!(not_a_component(b"\0asm\x01\0\0\0")
            .unwrap()
            .contains("core WebAssembly module"));
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
    }

    #[test]
    fn imports_are_judged_by_name_and_version() {
        assert_eq!(why_missing("wasi:io/streams@0.2.3", World::Step), None);
        assert_eq!(why_missing("wfhost:plugin/host@0.1.0", World::Step), None);
        let other_minor = why_missing("wfhost:plugin/host@0.2.0", World::Step).unwrap();
        assert!(
            other_minor.contains("built against wfhost:plugin@0.2.0; this wfhost provides 0.1.x"),
            "{other_minor}"
        );
        let newer = why_missing("wfhost:plugin/host@0.1.9", World::Step).unwrap();
        assert!(newer.contains("newer"), "{newer}");
        let http = why_missing("wasi:http/types@0.2.0", World::Step).unwrap();
        assert!(http.contains("no wasi:http"), "{http}");
        assert!(why_missing("wasi:io/streams@0.3.0", World::Step).is_some());
        assert!(why_missing("wasi:io/streams@0.2.99", World::Step).is_some());
        let policy = why_missing("wfhost:plugin/process@0.1.2", World::ToolPolicy).unwrap();
        assert!(policy.contains("a tool-policy component gets"), "{policy}");
        assert!(why_missing("acme:thing/x@1.0.0", World::Functions).is_some());
    }
}
