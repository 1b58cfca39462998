//! `output: json`: find the JSON document in the model's final answer and
//! check it against the step's `output_schema`.
//!
//! The validator implements a small, predictable subset of JSON Schema:
//!
//! | keyword                | meaning |
//! |------------------------|---------|
//! | `type`                 | `object`, `array`, `string`, `number`, `integer`, `boolean`, `null`, or a list of them |
//! | `enum`                 | the value equals one of the listed values |
//! | `const`                | the value equals this value |
//! | `required`             | names of properties an object must have |
//! | `properties`           | schemas of an object's properties (checked when present) |
//! | `additionalProperties` | `false` rejects properties not in `properties`; a schema checks them |
//! | `items`                | a schema every array element must match (or a list: positional schemas) |
//!
//! Other keywords (`description`, `minimum`, `pattern`, `$ref` ...) are
//! ignored. The schema `true` or `{}` accepts anything, `false` nothing.

use serde_json::Value;

/// How many schema violations an error message lists.
const MAX_ERRORS: usize = 10;

/// Parse the final answer as JSON: the whole (trimmed) text, or else the
/// first fenced code block (```` ```json ... ``` ```` or ```` ``` ... ``` ````)
/// that holds valid JSON.
pub fn extract(content: &str) -> Result<Value, String> {
    let trimmed = content.trim();
    let whole_error = match serde_json::from_str::<Value>(trimmed) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    for block in fenced_blocks(content) {
        if let Ok(v) = serde_json::from_str::<Value>(block.trim()) {
            return Ok(v);
        }
    }
    let begins: String = trimmed.chars().take(200).collect();
    let more = if trimmed.chars().count() > 200 {
        "…"
    } else {
        ""
    };
    Err(if trimmed.is_empty() {
        "the agent's final answer is empty, expected a JSON document (output: json)".to_string()
    } else {
        format!(
            "the agent's final answer is not valid JSON (output: json): {whole_error}; \
             it begins: {begins:?}{more}"
        )
    })
}

/// Contents of the ```` ``` ```` fenced blocks of `text`, in order (the info
/// string after the opening fence, e.g. `json`, is skipped).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The info string runs to the end of the line.
        let Some(newline) = after.find('\n') else {
            break;
        };
        let body = &after[newline + 1..];
        let Some(close) = body.find("```") else {
            break;
        };
        blocks.push(&body[..close]);
        rest = &body[close + 3..];
    }
    blocks
}

/// Check `value` against `schema`; on failure, a message listing the
/// violations by path (`$` is the document, `$.a[0]` a nested value).
pub fn validate(value: &Value, schema: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    check(value, schema, "$", &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    let total = errors.len();
    errors.truncate(MAX_ERRORS);
    let mut message = format!(
        "the agent's JSON answer does not match output_schema: {}",
        errors.join("; ")
    );
    if total > MAX_ERRORS {
        message.push_str(&format!(" (and {} more)", total - MAX_ERRORS));
    }
    Err(message)
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{path}: no value is allowed here"));
            return;
        }
        Value::Object(map) => map,
        other => {
            errors.push(format!(
                "{path}: invalid schema (expected an object or a boolean, got {})",
                kind(other)
            ));
            return;
        }
    };

    if let Some(ty) = schema.get("type") {
        let names: Vec<&str> = match ty {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            errors.push(format!(
                "{path}: invalid schema (`type` must be a type name or a list of them)"
            ));
            return;
        }
        if let Some(bad) = names.iter().find(|n| !is_type_name(n)) {
            errors.push(format!("{path}: invalid schema (unknown type `{bad}`)"));
            return;
        }
        if !names.iter().any(|n| has_type(value, n)) {
            errors.push(format!(
                "{path}: expected {}, got {}",
                names.join(" or "),
                kind(value)
            ));
            // Further keywords would only repeat the mismatch.
            return;
        }
    }

    if let Some(options) = schema.get("enum") {
        match options.as_array() {
            Some(options) if options.contains(value) => {}
            Some(options) => errors.push(format!(
                "{path}: expected one of {}, got {}",
                Value::Array(options.clone()),
                short(value)
            )),
            None => errors.push(format!("{path}: invalid schema (`enum` must be a list)")),
        }
    }

    if let Some(expected) = schema.get("const") {
        if expected != value {
            errors.push(format!(
                "{path}: expected {}, got {}",
                short(expected),
                short(value)
            ));
        }
    }

    if let Value::Object(object) = value {
        if let Some(required) = schema.get("required") {
            match required.as_array() {
                Some(names) => {
                    for name in names.iter().filter_map(Value::as_str) {
                        if !object.contains_key(name) {
                            errors.push(format!("{path}: missing required property `{name}`"));
                        }
                    }
                }
                None => errors.push(format!(
                    "{path}: invalid schema (`required` must be a list)"
                )),
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(properties) = properties {
            for (name, sub) in properties {
                if let Some(v) = object.get(name) {
                    check(v, sub, &child(path, name), errors);
                }
            }
        }
        if let Some(additional) = schema.get("additionalProperties") {
            for (name, v) in object {
                if properties.is_some_and(|p| p.contains_key(name)) {
                    continue;
                }
                match additional {
                    Value::Bool(false) => {
                        errors.push(format!("{path}: unexpected property `{name}`"))
                    }
                    sub => check(v, sub, &child(path, name), errors),
                }
            }
        }
    }

    if let Value::Array(items) = value {
        match schema.get("items") {
            None => {}
            Some(Value::Array(positional)) => {
                for (i, (item, sub)) in items.iter().zip(positional).enumerate() {
                    check(item, sub, &format!("{path}[{i}]"), errors);
                }
            }
            Some(sub) => {
                for (i, item) in items.iter().enumerate() {
                    check(item, sub, &format!("{path}[{i}]"), errors);
                }
            }
        }
    }
}

fn is_type_name(name: &str) -> bool {
    matches!(
        name,
        "object" | "array" | "string" | "number" | "integer" | "boolean" | "null"
    )
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// The JSON type of a value, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value for a message, cut at 60 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
    }
}

fn child(path: &str, name: &str) -> String {
    let simple = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if simple {
        format!("{path}.{name}")
    } else {
        format!("{path}[{}]", Value::String(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_plain_and_fenced_json() {
        assert_eq!(extract(" {\"a\": 1}\n").unwrap(), json!({"a": 1}));
        assert_eq!(extract("[1, 2]").unwrap(), json!([1, 2]));
        assert_eq!(
            extract("```json\n{\"ok\": true}\n```").unwrap(),
            json!({"ok": true})
        );
        assert_eq!(
            extract("Here is the result:\n\n```JSON\n{\"ok\": true}\n```\nThanks.").unwrap(),
            json!({"ok": true})
        );
        assert_eq!(extract("```\n\"text\"\n```").unwrap(), json!("text"));
        // The first block that parses wins.
        assert_eq!(
            extract("```sh\nls -l\n```\n```json\n{\"n\": 2}\n```").unwrap(),
            json!({"n": 2})
        );
    }

    #[test]
    fn reports_invalid_json() {
        let err = extract("I could not finish.").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(err.contains("I could not finish."), "{err}");
        let err = extract("```json\n{broken\n```").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(extract("  ").unwrap_err().contains("empty"));
        assert!(extract("```json {\"a\":1}").is_err());
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["summary", "findings"],
            "additionalProperties": false,
            "properties": {
                "summary": {"type": "string"},
                "score": {"type": ["integer", "null"]},
                "findings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["severity"],
                        "properties": {
                            "severity": {"enum": ["low", "high"]},
                            "file": {"type": "string"}
                        }
                    }
                }
            }
        })
    }

    #[test]
    fn accepts_a_matching_document() {
        let doc = json!({
            "summary": "fine",
            "score": 3,
            "findings": [{"severity": "low", "file": "a.rs", "extra": 1}]
        });
        validate(&doc, &schema()).unwrap();
        validate(
            &json!({"summary": "", "score": null, "findings": []}),
            &schema(),
        )
        .unwrap();
        validate(
            &json!({"summary": "", "score": 2.0, "findings": []}),
            &schema(),
        )
        .unwrap();
    }

    #[test]
    fn lists_violations_by_path() {
        let doc = json!({
            "summary": 1,
            "score": 1.5,
            "findings": [{"severity": "medium"}, {"file": 2}],
            "other": true
        });
        let err = validate(&doc, &schema()).unwrap_err();
        for part in [
            "$.summary: expected string, got integer",
            "$.score: expected integer or null, got number",
            "$.findings[0].severity: expected one of [\"low\",\"high\"], got \"medium\"",
            "$.findings[1]: missing required property `severity`",
            "$.findings[1].file: expected string, got integer",
            "$: unexpected property `other`",
        ] {
            assert!(err.contains(part), "missing {part:?} in {err}");
        }
        let err = validate(&json!([]), &schema()).unwrap_err();
        assert!(err.ends_with("$: expected object, got array"), "{err}");
        let err = validate(&json!({"findings": []}), &schema()).unwrap_err();
        assert!(err.contains("missing required property `summary`"), "{err}");
    }

    #[test]
    fn boolean_const_and_positional_schemas() {
        validate(&json!(1), &json!(true)).unwrap();
        validate(&json!(1), &json!({})).unwrap();
        assert!(validate(&json!(1), &json!(false)).is_err());
        validate(&json!("v1"), &json!({"const": "v1"})).unwrap();
        assert!(validate(&json!("v2"), &json!({"const": "v1"})).is_err());
        let pair = json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}]});
        validate(&json!(["a", 1]), &pair).unwrap();
        assert!(validate(&json!([1, "a"]), &pair).is_err());
        let map = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        validate(&json!({"a": 1, "b": 2}), &map).unwrap();
        let err = validate(&json!({"a": 1, "odd key": "x"}), &map).unwrap_err();
        assert!(err.contains("$[\"odd key\"]: expected integer"), "{err}");
    }

    #[test]
    fn invalid_schemas_are_reported() {
        assert!(validate(&json!(1), &json!({"type": "float"}))
            .unwrap_err()
            .contains("unknown type `float`"));
        assert!(validate(&json!(1), &json!({"type": 3}))
            .unwrap_err()
            .contains("invalid schema"));
        assert!(validate(&json!(1), &json!({"enum": "a"}))
            .unwrap_err()
            .contains("`enum` must be a list"));
    }

    #[test]
    fn long_error_lists_are_cut() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        let doc = Value::Array((0..15).map(|i| json!(i)).collect());
        let err = validate(&doc, &schema).unwrap_err();
        assert!(err.ends_with("(and 5 more)"), "{err}");
    }
}
