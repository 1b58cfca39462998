//! The operator's ceiling: the most any workflow run by this host may be
//! granted. Read from `config.toml` in the wfhost home (or `--config`):
//!
//! ```toml
//! [ceiling]
//! files = [{ path = "/work", access = "read-write" }, { path = "/usr/share/doc", access = "read" }]
//! exec = ["sh", "git", "cargo"]
//! env = ["RUST_LOG"]
//! network = ["*.github.com:443"]
//! memory = "1GiB"
//! timeout = "30m"
//! max_output = "64MiB"
//! sandbox = "strict"      # no step may ask for `sandbox: best-effort`
//! ```
//!
//! A key that is absent sets no cap on that kind of grant; an empty list
//! forbids it entirely. Paths are relative to the config file. An agent
//! step's model counts as the step asking for its endpoint (`network`) and
//! its key's variable (`env`), see [`Ceiling::check_model`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::step::grants::{self, Caps, CeilingSpec, ResolvedGrants};
use crate::store::Durability;
use crate::workflow::reach::ModelReach;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    ceiling: Option<CeilingSpec>,
    #[serde(default)]
    store: Option<StoreSpec>,
}

/// The `[store]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSpec {
    durability: Option<Durability>,
    /// A PostgreSQL URL: runs shared by several machines.
    url: Option<String>,
}

/// The caps, resolved (each kind by its capability unit, see
/// [`crate::step::grants`]).
#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    caps: Caps,
}

/// Read the store's durability (`[store] durability`) from a host config
/// file; `normal` when the file does not set it.
pub fn load_durability(path: &Path) -> Result<Durability, String> {
    Ok(read_config(path)?
        .store
        .as_ref()
        .and_then(|store| store.durability)
        .unwrap_or_default())
}

/// Read the store's PostgreSQL URL (`[store] url`) from a host config
/// file; `None` (SQLite under the home) when the file does not set it.
pub fn load_store_url(path: &Path) -> Result<Option<String>, String> {
    Ok(read_config(path)?
        .store
        .as_ref()
        .and_then(|store| store.url.clone()))
}

/// The config file at `path`, parsed. A command asks for it several times
/// (the store's durability and URL, the ceiling); it is read and parsed
/// once while its size, modification time and inode stay the same (a
/// long-running `serve` sees an edited file).
fn read_config(path: &Path) -> Result<Arc<ConfigFile>, String> {
    type Cached = (PathBuf, (u64, Option<SystemTime>, u64), Arc<ConfigFile>);
    static LAST: Mutex<Option<Cached>> = Mutex::new(None);
    let stamp = std::fs::metadata(path)
        .map(|meta| (meta.len(), meta.modified().ok(), meta.ino()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cached_path, cached_stamp, file)) = last.as_ref() {
        if cached_path == path && *cached_stamp == stamp {
            return Ok(file.clone());
        }
    }
    let file = Arc::new(parse_config(path)?);
    *last = Some((path.to_path_buf(), stamp, file.clone()));
    Ok(file)
}

fn parse_config(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                let col = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        format!("{}{at}: {}", path.display(), e.message())
    })
}

impl Ceiling {
    /// Read the ceiling from a host config file. `Ok(None)` when the file
    /// has no `[ceiling]` table.
    pub fn load(path: &Path) -> Result<Option<Ceiling>, String> {
        let file = read_config(path)?;
        let Some(spec) = file.ceiling.as_ref() else {
            return Ok(None);
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let caps = grants::load_caps(spec, base)
            .map_err(|e| format!("{}: ceiling {e}", path.display()))?;
        Ok(Some(Ceiling {
            source: path.to_path_buf(),
            caps,
        }))
    }

    /// Every way `grants` (with the step's effective `timeout`) exceeds
    /// this ceiling, one message each.
    pub fn check(&self, grants: &ResolvedGrants, timeout: Duration) -> Vec<String> {
        grants::check_caps(
            &self.caps,
            &self.source.display().to_string(),
            grants,
            timeout,
        )
    }

    /// Every way what an agent step's model reaches (its endpoint and its
    /// key's variable) exceeds this ceiling: checked exactly as if the step
    /// had asked for them in its `network` and `env` grants.
    pub fn check_model(&self, reach: &ModelReach) -> Vec<String> {
        let mut problems = Vec::new();
        let source = self.source.display().to_string();
        let of = format!("of agent '{}' ({} model)", reach.agent, reach.provider);
        if let Some(endpoint) = &reach.endpoint {
            problems.extend(grants::network_cap_problem(
                &self.caps,
                &source,
                endpoint,
                &format!("model endpoint '{endpoint}' {of}"),
            ));
        }
        if let Some(name) = &reach.api_key_env {
            problems.extend(grants::env_cap_problem(
                &self.caps,
                &source,
                name,
                &format!("api_key_env '{name}' {of}"),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::grants::{resolve_program, EnvGrant, ExecGrant, NetworkGrant, SandboxMode};

    fn ceiling(text: &str) -> (tempfile::TempDir, Result<Option<Ceiling>, String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Ceiling::load(&path);
        (dir, loaded)
    }

    /// The file is read once while unchanged, and again once edited (a
    /// running `serve` sees the operator's edit), including into an error.
    #[test]
    fn an_edited_config_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[store]\ndurability = \"full\"\n").unwrap();
        assert_eq!(load_durability(&path).unwrap(), Durability::Full);
        assert_eq!(load_durability(&path).unwrap(), Durability::Full);
        assert_eq!(load_store_url(&path).unwrap(), None);
        std::fs::write(&path, "[store]\nurl = \"postgres://h/db\"\n").unwrap();
        assert_eq!(load_durability(&path).unwrap(), Durability::Normal);
        assert_eq!(
            load_store_url(&path).unwrap().as_deref(),
            Some("postgres://h/db")
        );
        std::fs::write(&path, "[store]\ndurabilty = 1\n").unwrap();
        let error = load_durability(&path).unwrap_err();
        assert!(error.contains("config.toml:2:1"), "{error}");
        std::fs::remove_file(&path).unwrap();
        assert!(load_durability(&path).is_err());
    }

    #[test]
    fn grants_within_the_ceiling_pass_and_excess_is_named() {
        let (dir, loaded) = ceiling(
            "[ceiling]\nfiles = [{ path = \"work\", access = \"read\" }]\nexec = [\"sh\"]\nenv = [\"HOME\"]\nnetwork = [\"*.example.com:443\"]\nmemory = \"64MiB\"\ntimeout = \"1m\"\n",
        );
        let ceiling = loaded.unwrap().unwrap();
        std::fs::create_dir_all(dir.path().join("work/sub")).unwrap();
        let work = std::fs::canonicalize(dir.path().join("work/sub")).unwrap();
        let ok = ResolvedGrants {
            files: vec![(work.clone(), false)],
            exec: vec![ExecGrant {
                name: "sh".into(),
                path: resolve_program("sh").unwrap(),
            }],
            env: vec![
                EnvGrant {
                    name: "HOME".into(),
                    value: None,
                },
                EnvGrant {
                    name: "X".into(),
                    value: Some("1".into()),
                },
            ],
            network: vec![NetworkGrant::parse("api.example.com:443").unwrap()],
            memory: 32 << 20,
            ..ResolvedGrants::default()
        };
        assert_eq!(
            ceiling.check(&ok, Duration::from_secs(30)),
            Vec::<String>::new()
        );

        let too_much = ResolvedGrants {
            files: vec![(work, true), (PathBuf::from("/etc"), false)],
            exec: vec![ExecGrant {
                name: "curl".into(),
                path: PathBuf::from("/usr/bin/curl"),
            }],
            env: vec![EnvGrant {
                name: "AWS_SECRET".into(),
                value: None,
            }],
            network: vec![NetworkGrant::parse("evil.com").unwrap()],
            memory: 1 << 30,
            ..ResolvedGrants::default()
        };
        let problems = ceiling.check(&too_much, Duration::from_secs(3600));
        let text = problems.join("\n");
        assert_eq!(problems.len(), 7, "{text}");
        assert!(
            text.contains("(read-write) exceeds the operator ceiling"),
            "{text}"
        );
        assert!(text.contains("files grant '/etc' (read)"), "{text}");
        assert!(
            text.contains("exec grant 'curl' exceeds the operator ceiling")
                && text.contains("ceiling exec: sh"),
            "{text}"
        );
        assert!(text.contains("env grant 'AWS_SECRET'"), "{text}");
        assert!(
            text.contains("network grant 'evil.com'") && text.contains("*.example.com:443"),
            "{text}"
        );
        assert!(
            text.contains("memory grant of 1024 MiB") && text.contains("ceiling memory: 64 MiB"),
            "{text}"
        );
        assert!(
            text.contains("timeout of 1h") && text.contains("ceiling timeout: 1m"),
            "{text}"
        );
        assert!(text.contains("config.toml"), "{text}");
    }

    #[test]
    fn a_strict_ceiling_forbids_best_effort() {
        let (_dir, loaded) = ceiling("[ceiling]\nsandbox = \"strict\"\n");
        let strict = loaded.unwrap().unwrap();
        let lenient = ResolvedGrants {
            sandbox: SandboxMode::BestEffort,
            ..ResolvedGrants::default()
        };
        let problems = strict.check(&lenient, Duration::from_secs(1));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("sandbox: best-effort is forbidden by the operator ceiling in ")
                && problems[0].contains("config.toml (ceiling sandbox: strict)"),
            "{problems:?}"
        );
        assert!(strict
            .check(&ResolvedGrants::default(), Duration::from_secs(1))
            .is_empty());
        let (_dir, loaded) = ceiling("[ceiling]\nsandbox = \"best-effort\"\n");
        assert!(loaded
            .unwrap()
            .unwrap()
            .check(&lenient, Duration::from_secs(1))
            .is_empty());
        let (_dir, loaded) = ceiling("[ceiling]\nsandbox = \"lax\"\n");
        assert!(loaded.unwrap_err().contains("config.toml:2:11"));
    }

    #[test]
    fn bad_config_files_are_reported_with_position() {
        let (_dir, loaded) = ceiling("[ceiling]\nexec = [\"sh\"]\nmemroy = \"1GiB\"\n");
        let error = loaded.unwrap_err();
        assert!(
            error.contains("config.toml:3:1") && error.contains("memroy"),
            "{error}"
        );
        let (_dir, loaded) = ceiling("[ceiling]\nmemory = \"huge\"\n");
        assert!(loaded
            .unwrap_err()
            .contains("ceiling memory: 'huge' is not a size"));
        let (_dir, loaded) = ceiling("# nothing\n");
        assert!(loaded.unwrap().is_none());
    }
}
