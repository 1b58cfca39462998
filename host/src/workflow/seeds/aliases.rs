//! Readings for the seeds' spellings that the parser takes as another
//! name of a wfhost key (`dependencies` for `needs`, `argsSchema` for
//! `args`, …): found by walking the document as written.

use serde_json::Value;

use super::Reading;
use crate::workflow::parse::Format;

/// `(seed key, wfhost key)` of a workflow's top level.
const TOP: &[(&str, &str)] = &[("argsSchema", "args")];
/// … of a step.
const STEP: &[(&str, &str)] = &[
    ("key", "id"),
    ("dependencies", "needs"),
    ("command", "run"),
    ("timeoutMs", "timeout"),
    ("retryPolicy", "retry"),
    ("input", "prompt"),
    ("continueOnError", "continue_on_error"),
    ("working-directory", "working_directory"),
];
/// … of a retry block.
const RETRY: &[(&str, &str)] = &[
    ("maxAttempts", "max_attempts"),
    ("initialInterval", "initial_interval"),
    ("initialDelayMs", "initial_interval"),
    ("retryDelayMs", "initial_interval"),
    ("backoffCoefficient", "backoff_coefficient"),
    ("backoffMultiplier", "backoff_coefficient"),
    ("retryBackoffMultiplier", "backoff_coefficient"),
    ("maxInterval", "max_interval"),
    ("maxDelayMs", "max_interval"),
    ("retryableErrors", "errors"),
];
/// … of a stage loop.
const LOOP: &[(&str, &str)] = &[
    ("max_iters", "max_iterations"),
    ("stop_when", "until"),
    ("fallback_next_stage", "fallback"),
];
/// … of an `on_failure` block.
const ON_FAILURE: &[(&str, &str)] = &[("escalation", "escalate")];
/// … of `config`.
const CONFIG: &[(&str, &str)] = &[("timeoutMs", "timeout")];
/// … of a phase or an agent.
const KEYED: &[(&str, &str)] = &[("key", "id")];

/// Every seed key of `source` that the parser read under another name.
/// Cheap when there is none: the text is searched before it is parsed
/// again.
pub fn readings(source: &str, format: Format) -> Vec<Reading> {
    let all = [TOP, STEP, RETRY, LOOP, ON_FAILURE, CONFIG, KEYED];
    let written = |seed: &str| match format {
        Format::Yaml => {
            source.contains(&format!("{seed}:")) || source.contains(&format!("\"{seed}\""))
        }
        Format::Json => source.contains(&format!("\"{seed}\"")),
    };
    if !all
        .iter()
        .flat_map(|table| table.iter())
        .any(|(seed, _)| written(seed))
    {
        return Vec::new();
    }
    let document: Option<Value> = match format {
        Format::Yaml => serde_yaml::from_str(source).ok(),
        Format::Json => serde_json::from_str(source).ok(),
    };
    let Some(Value::Object(top)) = document else {
        return Vec::new();
    };
    let mut out = Vec::new();
    keys(&top, "", TOP, &mut out);
    if let Some(Value::Object(config)) = top.get("config") {
        keys(config, "config.", CONFIG, &mut out);
    }
    if let Some(Value::Object(defaults)) = top.get("defaults") {
        if let Some(Value::Object(retry)) = defaults.get("retry") {
            keys(retry, "defaults.retry.", RETRY, &mut out);
        }
    }
    for (list, label) in [("phases", "phases"), ("agents", "agents")] {
        if let Some(Value::Array(items)) = top.get(list) {
            for (i, item) in items.iter().enumerate() {
                if let Value::Object(map) = item {
                    keys(map, &format!("{label}[{i}]."), KEYED, &mut out);
                }
            }
        }
    }
    if let Some(Value::Array(steps)) = top.get("steps") {
        for (i, step) in steps.iter().enumerate() {
            let Value::Object(step) = step else { continue };
            let id = step
                .get("id")
                .or_else(|| step.get("key"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let place = format!("steps[{i}] ({}).", id.chars().take(64).collect::<String>());
            keys(step, &place, STEP, &mut out);
            for (key, table) in [
                ("retry", RETRY),
                ("retryPolicy", RETRY),
                ("loop", LOOP),
                ("on_failure", ON_FAILURE),
            ] {
                if let Some(Value::Object(block)) = step.get(key) {
                    keys(block, &format!("{place}{key}."), table, &mut out);
                }
            }
        }
    }
    out
}

fn keys(
    map: &serde_json::Map<String, Value>,
    place: &str,
    table: &[(&str, &str)],
    out: &mut Vec<Reading>,
) {
    for (seed, wfhost) in table {
        if map.contains_key(*seed) {
            out.push(Reading {
                place: format!("{place}{seed}"),
                written: (*seed).to_string(),
                read_as: (*wfhost).to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keys_are_found_where_they_are_written() {
        let source = "name: x\nargsSchema: {type: object}\nphases: [{key: p}]\nsteps:\n  - key: a\n    command: 'true'\n    dependencies: []\n    retryPolicy: {maxAttempts: 2, retryableErrors: [x]}\n    loop: {stop_when: 'true', max_iters: 2}\n";
        let found: Vec<String> = readings(source, Format::Yaml)
            .into_iter()
            .map(|r| format!("{} → {}", r.place, r.read_as))
            .collect();
        assert_eq!(
            found,
            vec![
                "argsSchema → args",
                "phases[0].key → id",
                "steps[0] (a).key → id",
                "steps[0] (a).dependencies → needs",
                "steps[0] (a).command → run",
                "steps[0] (a).retryPolicy → retry",
                "steps[0] (a).retryPolicy.maxAttempts → max_attempts",
                "steps[0] (a).retryPolicy.retryableErrors → errors",
                "steps[0] (a).loop.max_iters → max_iterations",
                "steps[0] (a).loop.stop_when → until",
            ]
        );
        assert!(readings("name: x\nsteps: []\n", Format::Yaml).is_empty());
    }
}
