//! Run arguments: defaults from the workflow's `args` schema, validation
//! against it, and typing of `--arg key=value` strings.

use serde_json::{Map, Value};

use super::diag::{Diagnostic, Diagnostics};

/// Applies the defaults of `schema` to `given` and checks the result.
///
/// Defaults come from top-level `properties.<name>.default` and fill only
/// names not given. When the schema lists `properties` and says nothing
/// about `additionalProperties` (nor `patternProperties`), a given name that is not declared is an
/// error (a typo in `--arg` should not pass silently); with an explicit
/// `additionalProperties` the JSON Schema rules apply. Every error is
/// reported, each naming the argument (`arg 'count': "x" is not of type
/// "integer"`). Without a schema the given object is returned as it is.
pub fn resolve_args(
    schema: Option<&Value>,
    given: Map<String, Value>,
) -> Result<Value, Diagnostics> {
    let Some(schema) = schema else {
        // No `args` block: the workflow takes no arguments (and validation
        // rejects `{{ args.x }}` in it), so one given is a mistake.
        let mut out = Diagnostics::new();
        for name in given.keys() {
            out.push(Diagnostic::new(format!(
                "arg '{name}' given, but the workflow declares no `args` (add an `args` block \
                 with a JSON Schema to accept it)"
            )));
        }
        return if out.is_empty() {
            Ok(Value::Object(given))
        } else {
            Err(out)
        };
    };
    let mut args = given;
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(props) = properties {
        for (name, prop) in props {
            if let Some(default) = prop.get("default") {
                if !args.contains_key(name) {
                    args.insert(name.clone(), default.clone());
                }
            }
        }
    }
    let mut out = Diagnostics::new();
    if let Some(props) = properties {
        let open_ended = schema.get("additionalProperties").is_some()
            || schema.get("patternProperties").is_some();
        if !open_ended {
            let mut declared: Vec<&str> = props.keys().map(String::as_str).collect();
            declared.sort_unstable();
            for name in args.keys().filter(|k| !props.contains_key(k.as_str())) {
                out.push(Diagnostic::new(format!(
                    "arg '{name}' is not declared (declared: {})",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                )));
            }
        }
    }
    let instance = Value::Object(args);
    match jsonschema::validator_for(schema) {
        Err(e) => out.push(Diagnostic::new(format!(
            "the workflow's args schema is invalid: {e}"
        ))),
        Ok(validator) => {
            for error in validator.iter_errors(&instance) {
                let pointer = error.instance_path().as_str();
                let message = match pointer_to_name(pointer) {
                    Some(name) => format!("arg '{name}': {error}"),
                    None => format!("args: {error}"),
                };
                out.push(Diagnostic::new(message));
            }
        }
    }
    out.into_result(instance)
}

/// `/a/0/b~1c` → `a.0.b/c`; the root pointer gives `None`.
fn pointer_to_name(pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The JSON types `schema` declares for property `key` (`type` as a string
/// or a list).
fn declared_types<'s>(schema: Option<&'s Value>, key: &str) -> Vec<&'s str> {
    let Some(ty) = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get(key))
        .and_then(|p| p.get("type"))
    else {
        return Vec::new();
    };
    match ty {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Types a `--arg key=raw` value: when the schema declares the property as
/// number, integer, boolean, array, object or null (and not also string),
/// `raw` is parsed as JSON, falling back to the string when it does not
/// parse (so that validation reports the mismatch). Otherwise the value is
/// the string `raw`.
pub fn coerce_cli_arg(schema: Option<&Value>, key: &str, raw: &str) -> Value {
    let types = declared_types(schema, key);
    let wants_json = !types.is_empty() && !types.contains(&"string");
    if wants_json {
        if let Ok(value) = serde_json::from_str::<Value>(raw.trim()) {
            return value;
        }
    }
    Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "world"},
                "count": {"type": "integer", "default": 1, "minimum": 1},
                "verbose": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opt": {"type": ["integer", "null"]},
                "either": {"type": ["string", "integer"]},
                "free": {}
            },
            "required": ["verbose"]
        })
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test helper takes objects"),
        }
    }

    fn messages(r: Result<Value, Diagnostics>) -> Vec<String> {
        r.unwrap_err().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn without_a_schema_no_arg_is_taken() {
        assert_eq!(resolve_args(None, Map::new()).unwrap(), json!({}));
        let e = resolve_args(None, map(json!({"a": "1"}))).unwrap_err();
        assert!(
            e.to_string()
                .contains("arg 'a' given, but the workflow declares no `args`"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_applied_and_given_values_win() {
        let s = schema();
        let out = resolve_args(Some(&s), map(json!({"verbose": true, "count": 5}))).unwrap();
        assert_eq!(out, json!({"name": "world", "count": 5, "verbose": true}));
    }

    #[test]
    fn schema_mismatch_names_the_arg() {
        let s = schema();
        let msgs = messages(resolve_args(
            Some(&s),
            map(json!({"verbose": true, "count": "x"})),
        ));
        assert_eq!(msgs, vec![r#"arg 'count': "x" is not of type "integer""#]);
    }

    #[test]
    fn every_error_is_reported() {
        let s = schema();
        let msgs = messages(resolve_args(
            Some(&s),
            map(json!({"count": 0, "tags": ["a", 3]})),
        ));
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("arg 'count': 0 is less than the minimum of 1")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m == r#"arg 'tags.1': 3 is not of type "string""#),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m == r#"args: "verbose" is a required property"#),
            "{msgs:?}"
        );
    }

    #[test]
    fn unknown_arg_is_an_error() {
        let s = schema();
        let msgs = messages(resolve_args(
            Some(&s),
            map(json!({"verbose": true, "nmae": "x"})),
        ));
        assert_eq!(
            msgs,
            vec!["arg 'nmae' is not declared (declared: count, either, free, name, opt, tags, verbose)"]
        );
    }

    #[test]
    fn explicit_additional_properties_follow_json_schema() {
        let open = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true});
        assert!(resolve_args(Some(&open), map(json!({"b": 1}))).is_ok());
        let closed =
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
        let msgs = messages(resolve_args(Some(&closed), map(json!({"b": 1}))));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("args: "), "{msgs:?}");
        assert!(msgs[0].contains("'b'"), "{msgs:?}");
    }

    #[test]
    fn invalid_schema_is_reported() {
        let bad = json!({"type": "object", "properties": {"a": {"type": "nope"}}});
        let msgs = messages(resolve_args(Some(&bad), Map::new()));
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].starts_with("the workflow's args schema is invalid: "),
            "{msgs:?}"
        );
    }

    #[test]
    fn pointer_names() {
        assert_eq!(pointer_to_name(""), None);
        assert_eq!(pointer_to_name("/a"), Some("a".into()));
        assert_eq!(pointer_to_name("/a/0/b~1c~0d"), Some("a.0.b/c~d".into()));
    }

    #[test]
    fn coerce_cli_arg_types_values_by_schema() {
        let s = schema();
        let s = Some(&s);
        assert_eq!(coerce_cli_arg(s, "count", "42"), json!(42));
        assert_eq!(coerce_cli_arg(s, "count", " 7 "), json!(7));
        assert_eq!(coerce_cli_arg(s, "verbose", "true"), json!(true));
        assert_eq!(coerce_cli_arg(s, "tags", r#"["a","b"]"#), json!(["a", "b"]));
        assert_eq!(coerce_cli_arg(s, "opt", "null"), json!(null));
        assert_eq!(coerce_cli_arg(s, "opt", "3"), json!(3));
        // does not parse: kept as a string so validation reports it
        assert_eq!(coerce_cli_arg(s, "count", "many"), json!("many"));
        // strings stay strings, even when they look like JSON
        assert_eq!(coerce_cli_arg(s, "name", "42"), json!("42"));
        assert_eq!(coerce_cli_arg(s, "either", "42"), json!("42"));
        // no type, unknown property, no schema: strings
        assert_eq!(coerce_cli_arg(s, "free", "1"), json!("1"));
        assert_eq!(coerce_cli_arg(s, "zzz", "1"), json!("1"));
        assert_eq!(coerce_cli_arg(None, "count", "1"), json!("1"));
    }

    #[test]
    fn coerced_values_validate() {
        let s = schema();
        let mut given = Map::new();
        given.insert(
            "verbose".into(),
            coerce_cli_arg(Some(&s), "verbose", "false"),
        );
        given.insert("count".into(), coerce_cli_arg(Some(&s), "count", "x"));
        let msgs = messages(resolve_args(Some(&s), given));
        assert_eq!(msgs, vec![r#"arg 'count': "x" is not of type "integer""#]);
    }
}
