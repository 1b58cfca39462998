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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::grants::{
    exec_line_programs, parse_size, resolve_program, NetworkGrant, ResolvedGrants,
};
use crate::store::Durability;
use crate::workflow::model::{Access, FileGrant, SandboxMode};
use crate::workflow::parse_duration;
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CeilingSpec {
    files: Option<Vec<FileGrant>>,
    env: Option<Vec<String>>,
    exec: Option<Vec<String>>,
    network: Option<Vec<String>>,
    memory: Option<String>,
    timeout: Option<String>,
    max_output: Option<String>,
    sandbox: Option<SandboxMode>,
}

/// The caps, resolved.
#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    files: Option<Vec<(PathBuf, bool)>>,
    env: Option<Vec<String>>,
    exec: Option<Vec<(String, Option<PathBuf>)>>,
    network: Option<Vec<NetworkGrant>>,
    memory: Option<u64>,
    timeout: Option<Duration>,
    max_output: Option<u64>,
    /// `strict`: steps may not ask for `sandbox: best-effort`.
    sandbox: Option<SandboxMode>,
}

/// Read the store's durability (`[store] durability`) from a host config
/// file; `normal` when the file does not set it.
pub fn load_durability(path: &Path) -> Result<Durability, String> {
    Ok(read_config(path)?
        .store
        .and_then(|store| store.durability)
        .unwrap_or_default())
}

fn read_config(path: &Path) -> Result<ConfigFile, String> {
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
        let Some(spec) = file.ceiling else {
            return Ok(None);
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let bad = |what: &str, e: String| format!("{}: ceiling {what}: {e}", path.display());
        Ok(Some(Ceiling {
            source: path.to_path_buf(),
            files: spec.files.map(|files| {
                files
                    .iter()
                    .map(|f| {
                        let joined = base.join(&f.path);
                        let path = std::fs::canonicalize(&joined).unwrap_or(joined);
                        (path, f.access == Access::ReadWrite)
                    })
                    .collect()
            }),
            env: spec.env,
            exec: spec
                .exec
                .map(|lines| {
                    let mut entries = Vec::new();
                    for line in &lines {
                        for name in exec_line_programs(line).map_err(|e| bad("exec", e))? {
                            entries.push((name.to_string(), resolve_program(name)));
                        }
                    }
                    Ok::<_, String>(entries)
                })
                .transpose()?,
            network: spec
                .network
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| NetworkGrant::parse(l))
                        .collect::<Result<_, _>>()
                })
                .transpose()
                .map_err(|e| bad("network", e))?,
            memory: spec
                .memory
                .map(|m| parse_size(&m))
                .transpose()
                .map_err(|e| bad("memory", e))?,
            timeout: spec
                .timeout
                .map(|t| parse_duration(&t))
                .transpose()
                .map_err(|e| bad("timeout", e))?,
            max_output: spec
                .max_output
                .map(|m| parse_size(&m))
                .transpose()
                .map_err(|e| bad("max_output", e))?,
            sandbox: spec.sandbox,
        }))
    }

    /// Every way `grants` (with the step's effective `timeout`) exceeds
    /// this ceiling, one message each.
    pub fn check(&self, grants: &ResolvedGrants, timeout: Duration) -> Vec<String> {
        let source = self.source.display();
        let mut problems = Vec::new();
        if let Some(allowed) = &self.files {
            for (path, writable) in &grants.files {
                let covered = allowed.iter().any(|(root, root_writable)| {
                    path.starts_with(root) && (*root_writable || !writable)
                });
                if !covered {
                    let list: Vec<String> = allowed
                        .iter()
                        .map(|(p, w)| {
                            format!(
                                "{} ({})",
                                p.display(),
                                if *w { "read-write" } else { "read" }
                            )
                        })
                        .collect();
                    problems.push(format!(
                        "files grant '{}' ({}) exceeds the operator ceiling in {source} (ceiling files: {})",
                        path.display(),
                        if *writable { "read-write" } else { "read" },
                        none_if_empty(&list)
                    ));
                }
            }
        }
        for grant in grants.env.iter().filter(|g| g.value.is_none()) {
            problems.extend(self.env_problem(&grant.name, &format!("env grant '{}'", grant.name)));
        }
        if let Some(allowed) = &self.exec {
            for grant in &grants.exec {
                let covered = allowed
                    .iter()
                    .any(|(name, path)| *name == grant.name || path.as_ref() == Some(&grant.path));
                if !covered {
                    let names: Vec<String> = allowed.iter().map(|(n, _)| n.clone()).collect();
                    problems.push(format!(
                        "exec grant '{}' exceeds the operator ceiling in {source} (ceiling exec: {})",
                        grant.name,
                        none_if_empty(&names)
                    ));
                }
            }
        }
        for grant in &grants.network {
            problems.extend(self.network_problem(grant, &format!("network grant '{grant}'")));
        }
        if let Some(max) = self.memory.filter(|max| grants.memory > *max) {
            problems.push(format!(
                "memory grant of {} MiB exceeds the operator ceiling in {source} (ceiling memory: {} MiB)",
                grants.memory >> 20,
                max >> 20
            ));
        }
        if let Some(max) = self.max_output.filter(|max| grants.max_output > *max) {
            problems.push(format!(
                "max_output grant of {} bytes exceeds the operator ceiling in {source} (ceiling max_output: {max} bytes)",
                grants.max_output
            ));
        }
        if self.sandbox == Some(SandboxMode::Strict) && grants.sandbox == SandboxMode::BestEffort {
            problems.push(format!(
                "sandbox: best-effort is forbidden by the operator ceiling in {source} (ceiling \
                 sandbox: strict); remove it so that started programs run fully confined or \
                 not at all"
            ));
        }
        if let Some(max) = self.timeout.filter(|max| timeout > *max) {
            problems.push(format!(
                "timeout of {} exceeds the operator ceiling in {source} (ceiling timeout: {})",
                crate::step::units::humanize(timeout),
                crate::step::units::humanize(max)
            ));
        }
        problems
    }

    /// Every way what an agent step's model reaches (its endpoint and its
    /// key's variable) exceeds this ceiling: checked exactly as if the step
    /// had asked for them in its `network` and `env` grants.
    pub fn check_model(&self, reach: &ModelReach) -> Vec<String> {
        let mut problems = Vec::new();
        let of = format!("of agent '{}' ({} model)", reach.agent, reach.provider);
        if let Some(endpoint) = &reach.endpoint {
            problems.extend(
                self.network_problem(endpoint, &format!("model endpoint '{endpoint}' {of}")),
            );
        }
        if let Some(name) = &reach.api_key_env {
            problems.extend(self.env_problem(name, &format!("api_key_env '{name}' {of}")));
        }
        problems
    }

    /// Why passing the host variable `name` exceeds the ceiling, if it does.
    fn env_problem(&self, name: &str, what: &str) -> Option<String> {
        let allowed = self.env.as_ref()?;
        (!allowed.iter().any(|a| a == name)).then(|| {
            format!(
                "{what} exceeds the operator ceiling in {} (ceiling env: {})",
                self.source.display(),
                none_if_empty(allowed)
            )
        })
    }

    /// Why connecting as `grant` allows exceeds the ceiling, if it does.
    fn network_problem(&self, grant: &NetworkGrant, what: &str) -> Option<String> {
        let allowed = self.network.as_ref()?;
        (!allowed.iter().any(|ceiling| ceiling.covers(grant))).then(|| {
            let lines: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            format!(
                "{what} exceeds the operator ceiling in {} (ceiling network: {})",
                self.source.display(),
                none_if_empty(&lines)
            )
        })
    }
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::grants::{EnvGrant, ExecGrant};

    fn ceiling(text: &str) -> (tempfile::TempDir, Result<Option<Ceiling>, String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Ceiling::load(&path);
        (dir, loaded)
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
