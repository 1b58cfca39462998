//! The `env` grant: environment variables a step (and every program it
//! starts) sees: `NAME` passes the host's value, `NAME=value` sets one.

use std::time::Duration;

use serde_json::Value;

use super::{
    none_if_empty, CapabilityUnit, Caps, CeilingSpec, Grants, ResolveContext, ResolvedGrants,
    SandboxPlan, WasiFuture, WasiSetup,
};

/// One `env` grant line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvGrant {
    /// Variable name.
    pub name: String,
    /// Fixed value (`NAME=value`), or `None` to pass the host's value.
    pub value: Option<String>,
}

impl EnvGrant {
    /// The value the step sees, if any.
    pub fn value(&self) -> Option<String> {
        match &self.value {
            Some(value) => Some(value.clone()),
            None => std::env::var(&self.name).ok(),
        }
    }
}

/// The `env` capability unit.
pub(super) struct Env;

impl CapabilityUnit for Env {
    /// Each line split into a name (letters, digits, `_`) and an optional
    /// fixed value.
    fn resolve(
        &self,
        spec: &Grants,
        _cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    ) {
        for line in &spec.env {
            let (name, value) = match line.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (line.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!("env grant '{line}': expected NAME or NAME=value"));
                continue;
            }
            into.env.push(EnvGrant {
                name: name.to_string(),
                value,
            });
        }
    }

    /// The ceiling lists the host variables a step may be passed.
    fn load_cap(
        &self,
        spec: &CeilingSpec,
        _base: &std::path::Path,
        into: &mut Caps,
    ) -> Result<(), String> {
        into.env = spec.env.clone();
        Ok(())
    }

    /// Only passing a host value is capped: a fixed value reveals nothing.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        _timeout: Duration,
        problems: &mut Vec<String>,
    ) {
        for grant in grants.env.iter().filter(|g| g.value.is_none()) {
            problems.extend(cap_problem(
                caps,
                source,
                &grant.name,
                &format!("env grant '{}'", grant.name),
            ));
        }
    }

    /// The granted variables that have a value, in the guest's
    /// environment.
    fn configure_wasi<'a>(
        &'a self,
        grants: &'a ResolvedGrants,
        wasi: &'a mut WasiSetup<'_>,
    ) -> WasiFuture<'a> {
        for grant in &grants.env {
            if let Some(value) = grant.value() {
                wasi.builder.env(&grant.name, value);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    /// The same variables in the environment of started programs.
    fn sandbox(&self, grants: &ResolvedGrants, plan: &mut SandboxPlan) {
        for grant in &grants.env {
            if let Some(value) = grant.value() {
                plan.env.push((grant.name.clone().into(), value.into()));
            }
        }
    }

    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>) {
        let env = grants.env.iter().map(|g| match &g.value {
            Some(value) => Value::String(format!("{}={value}", g.name)),
            None => Value::String(g.name.clone()),
        });
        out.insert("env".into(), env.collect());
    }

    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>) {
        let env: Vec<&str> = grants.env.iter().map(|g| g.name.as_str()).collect();
        if !env.is_empty() {
            parts.push(format!("env: {}", env.join(", ")));
        }
    }
}

/// Why passing the host variable `name` (described as `what`) exceeds the
/// ceiling's `env` caps, if it does.
pub(crate) fn cap_problem(caps: &Caps, source: &str, name: &str, what: &str) -> Option<String> {
    let allowed = caps.env.as_ref()?;
    (!allowed.iter().any(|a| a == name)).then(|| {
        format!(
            "{what} exceeds the operator ceiling in {source} (ceiling env: {})",
            none_if_empty(allowed)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_names_or_assignments() {
        let spec = Grants {
            env: vec![
                "HOME".into(),
                "X=a=b".into(),
                "BAD-NAME".into(),
                "=v".into(),
            ],
            ..Grants::default()
        };
        let host = super::super::HostState::default();
        let cx = ResolveContext {
            base: std::path::Path::new("/"),
            host: &host,
        };
        let mut resolved = ResolvedGrants::default();
        let mut problems = Vec::new();
        Env.resolve(&spec, &cx, &mut resolved, &mut problems);
        assert_eq!(
            resolved.env,
            [
                EnvGrant {
                    name: "HOME".into(),
                    value: None
                },
                EnvGrant {
                    name: "X".into(),
                    value: Some("a=b".into())
                }
            ]
        );
        assert_eq!(
            problems,
            [
                "env grant 'BAD-NAME': expected NAME or NAME=value",
                "env grant '=v': expected NAME or NAME=value"
            ]
        );
        let mut plan = SandboxPlan::default();
        Env.sandbox(&resolved, &mut plan);
        assert!(plan.env.contains(&("X".into(), "a=b".into())));
    }
}
