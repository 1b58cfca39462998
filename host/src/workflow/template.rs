//! Templates: minijinja in strict mode over the run context.
//!
//! The context a step's `with` and `run` are rendered against:
//!
//! ```json
//! { "args":  { ... },
//!   "steps": { "<id>": { "output": { ... }, "status": "completed" } },
//!   "run":   { "id": "...", "workflow": "..." },
//!   "workflow": { "name": "...", "dir": "/abs/dir/of/the/workflow/file" } }
//! ```
//!
//! An undefined reference is an error, never an empty string.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

/// A template environment configured for workflows (strict undefined
/// handling, no auto-escaping, trailing newlines kept).
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("shq", shell_quote);
    env.add_filter("seed_path", seed_path_filter);
    env
}

/// The `seed_path` filter (see [`crate::workflow::seeds::seed_path`]): the
/// seeds' `{{ step.field }}` lookups.
fn seed_path_filter(
    output: minijinja::Value,
    path: &str,
) -> Result<minijinja::Value, minijinja::Error> {
    let json = serde_json::to_value(&output).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
    })?;
    crate::workflow::seeds::seed_path(&json, path)
        .map(|value| minijinja::Value::from_serialize(&value))
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
}

/// The `shq` filter: `value` as one POSIX shell word (single-quoted, with
/// each `'` written as `'\''`), so a value put into a `run:` script cannot
/// become shell code. Strings are quoted as they are; other values as
/// their JSON text.
pub fn shell_quote(value: minijinja::Value) -> String {
    let text = match value.as_str() {
        Some(text) => text.to_string(),
        None => value.to_string(),
    };
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl Templates {
    /// A new environment.
    pub fn new() -> Self {
        Templates { env: new_env() }
    }

    /// Renders one template string against `ctx`.
    ///
    /// Errors name the template (or its failing line) and the reason, e.g.
    /// ``template `{{ args.nope }}`: undefined value 'args.nope' ('args' has
    /// keys: name)``.
    pub fn render_str(&self, template: &str, ctx: &Value) -> Result<String, String> {
        if !template.contains('{') {
            // No tag, expression or comment can start: the text is the result.
            return Ok(template.to_string());
        }
        let compiled = self
            .env
            .template_from_str(template)
            .map_err(|e| describe(template, &e, ctx))?;
        let used = narrowed(ctx, &compiled.undeclared_variables(true));
        compiled
            .render(minijinja::Value::from_serialize(used.as_ref()))
            .map_err(|e| describe(template, &e, ctx))
    }

    /// Renders every string in a JSON tree (object keys are kept as they
    /// are).
    ///
    /// A string that is exactly one `{{ expr }}` (surrounding whitespace
    /// allowed) keeps the JSON type of the expression's value: a number, a
    /// list, an object, a bool or null. Errors are prefixed with the path of
    /// the failing string inside `value` (e.g. `items[1].cmd: ...`).
    pub fn render_value(&self, value: &Value, ctx: &Value) -> Result<Value, String> {
        self.render_at(value, ctx, &mut String::new())
    }

    fn render_at(&self, value: &Value, ctx: &Value, path: &mut String) -> Result<Value, String> {
        let with_path = |path: &str, e: String| {
            if path.is_empty() {
                e
            } else {
                format!("{path}: {e}")
            }
        };
        match value {
            Value::String(s) => match single_expression(s) {
                Some(expr) => self
                    .eval_expression(s, expr, ctx)
                    .map_err(|e| with_path(path, e)),
                None => self
                    .render_str(s, ctx)
                    .map(Value::String)
                    .map_err(|e| with_path(path, e)),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    let rendered = self.render_at(item, ctx, path);
                    path.truncate(len);
                    out.push(rendered?);
                }
                Ok(Value::Array(out))
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (key, item) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    let rendered = self.render_at(item, ctx, path);
                    path.truncate(len);
                    out.insert(key.clone(), rendered?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// The value of the expression `expr` in `ctx`; `None` when it does not
    /// compile, fails or is undefined.
    pub fn eval_expression_value(
        &self,
        expr: &str,
        ctx: &minijinja::Value,
    ) -> Option<minijinja::Value> {
        let value = self.env.compile_expression(expr).ok()?.eval(ctx).ok()?;
        (!value.is_undefined()).then_some(value)
    }

    /// Evaluates `expr` (taken from `template`) keeping its JSON type.
    fn eval_expression(&self, template: &str, expr: &str, ctx: &Value) -> Result<Value, String> {
        let compiled = match self.env.compile_expression(expr) {
            Ok(c) => c,
            // Let the template path produce the (better located) error.
            Err(_) => return self.render_str(template, ctx).map(Value::String),
        };
        let used = narrowed(ctx, &compiled.undeclared_variables(true));
        let value = compiled
            .eval(minijinja::Value::from_serialize(used.as_ref()))
            .map_err(|e| describe(template, &e, ctx))?;
        if value.is_undefined() {
            let reason = missing_reference(template, ctx)
                .unwrap_or_else(|| format!("undefined value '{}'", expr.trim()));
            return Err(format!("template `{}`: {reason}", snippet(template, None)));
        }
        serde_json::to_value(&value).map_err(|e| {
            format!(
                "template `{}`: the value cannot be converted to JSON: {e}",
                snippet(template, None)
            )
        })
    }
}

/// Below this many steps in the context, it is converted whole.
const NARROW_FROM_STEPS: usize = 32;

/// The part of `ctx` a template reads, judged by the variables it names
/// (`used`, dotted): of `steps`, only the steps it names, unless it reads
/// `steps` as a whole (`steps[name]`, a loop). Converting the context into
/// minijinja values costs in proportion to its size, and a run's context
/// holds every output so far: whole, each render in a run of N steps would
/// cost O(N), the run O(N²). Other top-level values are kept as they are.
fn narrowed<'a>(
    ctx: &'a Value,
    used: &std::collections::HashSet<String>,
) -> std::borrow::Cow<'a, Value> {
    use std::borrow::Cow;
    let (Some(top), Some(steps)) = (ctx.as_object(), ctx.get("steps").and_then(Value::as_object))
    else {
        return Cow::Borrowed(ctx);
    };
    if steps.len() < NARROW_FROM_STEPS {
        return Cow::Borrowed(ctx);
    }
    let mut named = BTreeSet::new();
    for path in used {
        let mut parts = path.split('.');
        match (parts.next(), parts.next()) {
            (Some("steps"), Some(id)) => {
                named.insert(id);
            }
            (Some("steps"), None) => return Cow::Borrowed(ctx),
            _ => {}
        }
    }
    let mut out = serde_json::Map::with_capacity(top.len());
    for (key, value) in top {
        if key == "steps" {
            let kept: serde_json::Map<String, Value> = named
                .iter()
                .filter_map(|id| steps.get(*id).map(|v| (id.to_string(), v.clone())))
                .collect();
            out.insert(key.clone(), Value::Object(kept));
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    Cow::Owned(Value::Object(out))
}

/// If `s` is exactly one `{{ expr }}` (whitespace and `-` trim markers
/// around allowed), returns `expr`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{")
        || inner.contains("}}")
        || inner.contains("{%")
        || inner.contains("%}")
        || inner.contains("{#")
        || inner.trim().is_empty()
    {
        return None;
    }
    Some(inner)
}

/// A short form of the template for messages: the whole template when it is
/// one short line, else its line `line` (1-based) or its first line.
fn snippet(template: &str, line: Option<usize>) -> String {
    const MAX: usize = 80;
    let trimmed = template.trim();
    let text = if !trimmed.contains('\n') {
        trimmed.to_string()
    } else {
        let idx = line.unwrap_or(1).saturating_sub(1);
        let picked = template
            .lines()
            .nth(idx)
            .or_else(|| template.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("");
        picked.trim().to_string()
    };
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Turns a minijinja error into a one-line message naming the template.
fn describe(template: &str, err: &minijinja::Error, ctx: &Value) -> String {
    let line = err.line().filter(|_| template.trim().contains('\n'));
    let reason = match err.kind() {
        ErrorKind::UndefinedError => missing_reference(template, ctx).unwrap_or_else(|| {
            let refs: Vec<String> = references(template)
                .map(|r| r.into_iter().collect())
                .unwrap_or_default();
            if refs.is_empty() {
                reason(err)
            } else {
                format!("{} (the template reads: {})", reason(err), refs.join(", "))
            }
        }),
        ErrorKind::SyntaxError => format!("syntax error: {}", detail(err)),
        _ => reason(err),
    };
    match line {
        Some(n) => format!(
            "template line {n} `{}`: {reason}",
            snippet(template, Some(n))
        ),
        None => format!("template `{}`: {reason}", snippet(template, None)),
    }
}

/// minijinja's reason without its `(in <string>:N)` suffix.
fn reason(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(d) => format!("{}: {d}", err.kind()),
        None => err.kind().to_string(),
    }
}

fn detail(err: &minijinja::Error) -> String {
    err.detail()
        .map(str::to_string)
        .unwrap_or_else(|| err.kind().to_string())
}

/// Finds the first reference of `template` that is missing from `ctx` and
/// explains it, e.g. `undefined value 'steps.a.output.x' ('steps.a.output'
/// has keys: y, z)`.
fn missing_reference(template: &str, ctx: &Value) -> Option<String> {
    let refs = references(template).ok()?;
    for path in refs {
        let mut current = ctx;
        let mut walked: Vec<&str> = Vec::new();
        for segment in path.split('.') {
            match current {
                Value::Object(map) => match map.get(segment) {
                    Some(next) => {
                        walked.push(segment);
                        current = next;
                    }
                    None => {
                        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                        let parent = if walked.is_empty() {
                            "the context".to_string()
                        } else {
                            format!("'{}'", walked.join("."))
                        };
                        let have = if keys.is_empty() {
                            format!("{parent} is empty")
                        } else {
                            format!("{parent} has keys: {}", keys.join(", "))
                        };
                        return Some(format!("undefined value '{path}' ({have})"));
                    }
                },
                Value::Null => {
                    return Some(format!(
                        "undefined value '{path}' ('{}' is null)",
                        walked.join(".")
                    ))
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    let kind = match current {
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        _ => "a boolean",
                    };
                    return Some(format!(
                        "undefined value '{path}' ('{}' is {kind}, it has no attributes)",
                        walked.join(".")
                    ));
                }
                // A list: indexing by attribute is not something we judge.
                Value::Array(_) => break,
            }
        }
    }
    None
}

fn shared_env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(new_env)
}

/// The variables a template reads, as dotted paths (`steps.plan.output.x`):
/// each chain of plain attribute lookups is followed from a variable the
/// template does not define itself. Built-in functions (`range`, `dict`,
/// `namespace`, ...) are left out. A syntax error is an `Err` with the
/// reason.
pub fn references(template: &str) -> Result<BTreeSet<String>, String> {
    let env = shared_env();
    let compiled = env.template_from_str(template).map_err(|e| {
        let line = e.line().filter(|_| template.trim().contains('\n'));
        match line {
            Some(n) => format!(
                "template line {n} `{}`: syntax error: {}",
                snippet(template, Some(n)),
                detail(&e)
            ),
            None => format!(
                "template `{}`: syntax error: {}",
                snippet(template, None),
                detail(&e)
            ),
        }
    })?;
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    Ok(compiled
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let top = path.split('.').next().unwrap_or(path);
            !globals.contains(top)
        })
        .collect())
}

/// Whether `value` (or anything inside it) holds template syntax, so its
/// final value is known only once rendered at run time.
pub fn holds_template(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains("{{") || text.contains("{%"),
        Value::Array(items) => items.iter().any(holds_template),
        Value::Object(map) => map.values().any(holds_template),
        _ => false,
    }
}

#[cfg(test)]
mod narrowing_tests {
    use super::*;
    use serde_json::json;

    /// A context with 40 completed steps `s0`..`s39`, `s<i>.output.n = i`.
    fn big() -> Value {
        let steps: serde_json::Map<String, Value> = (0..40)
            .map(|i| {
                (
                    format!("s{i}"),
                    json!({ "output": { "n": i }, "status": "completed" }),
                )
            })
            .collect();
        json!({ "args": { "k": "s7" }, "steps": steps, "run": { "id": "r" } })
    }

    #[test]
    fn a_template_sees_what_it_names_and_whole_steps_when_it_asks() {
        let t = Templates::new();
        let ctx = big();
        assert_eq!(t.render_str("{{ steps.s3.output.n }}", &ctx).unwrap(), "3");
        assert_eq!(
            t.render_value(&json!("{{ steps.s39.output.n + 1 }}"), &ctx)
                .unwrap(),
            json!(40)
        );
        // By a computed name, or all of them: the whole context.
        assert_eq!(
            t.render_str("{{ steps[args.k].output.n }}", &ctx).unwrap(),
            "7"
        );
        assert_eq!(t.render_str("{{ steps | length }}", &ctx).unwrap(), "40");
        // A step that is not there is still an error, not an empty value.
        assert!(t.render_str("{{ steps.s99.output.n }}", &ctx).is_err());
        // No `{`: the text itself.
        assert_eq!(t.render_str("echo hi\n", &ctx).unwrap(), "echo hi\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "args": {"name": "world", "count": 3},
            "steps": {
                "plan": {"output": {"items": [1, 2], "meta": {"ok": true}, "title": "T"}, "status": "completed"}
            },
            "run": {"id": "r1", "workflow": "demo"}
        })
    }

    fn refs(t: &str) -> Vec<String> {
        references(t).unwrap().into_iter().collect()
    }

    #[test]
    fn renders_strings() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("hello {{ args.name }} from {{ run.id }}", &ctx())
                .unwrap(),
            "hello world from r1"
        );
        assert_eq!(
            t.render_str("{{ steps.plan.output.title | lower }}!", &ctx())
                .unwrap(),
            "t!"
        );
        assert_eq!(t.render_str("plain\n", &ctx()).unwrap(), "plain\n");
        assert_eq!(
            t.render_str("<{{ args.name }}>&", &ctx()).unwrap(),
            "<world>&",
            "no html escaping"
        );
    }

    #[test]
    fn undefined_is_an_error_in_strict_mode() {
        let t = Templates::new();
        let err = t
            .render_str("x={{ steps.plan.output.nope }}", &ctx())
            .unwrap_err();
        assert_eq!(
            err,
            "template `x={{ steps.plan.output.nope }}`: undefined value 'steps.plan.output.nope' ('steps.plan.output' has keys: items, meta, title)"
        );
        let err = t.render_str("{{ nothing }}", &ctx()).unwrap_err();
        assert!(
            err.contains("undefined value 'nothing' (the context has keys: args, run, steps)"),
            "{err}"
        );
        let err = t
            .render_str("{{ steps.other.output.x }}", &ctx())
            .unwrap_err();
        assert!(
            err.contains("undefined value 'steps.other.output.x' ('steps' has keys: plan)"),
            "{err}"
        );
    }

    #[test]
    fn undefined_in_if_and_loop_is_an_error() {
        let t = Templates::new();
        assert!(t
            .render_str("{% if args.missing %}x{% endif %}", &ctx())
            .unwrap_err()
            .contains("undefined value 'args.missing'"));
        assert!(t
            .render_str("{% for i in args.missing %}{{ i }}{% endfor %}", &ctx())
            .unwrap_err()
            .contains("args.missing"));
        // but an explicit test or default is fine
        assert_eq!(
            t.render_str("{{ args.missing | default('d') }}", &ctx())
                .unwrap(),
            "d"
        );
        assert_eq!(
            t.render_str(
                "{% if args.missing is defined %}y{% else %}n{% endif %}",
                &ctx()
            )
            .unwrap(),
            "n"
        );
    }

    #[test]
    fn undefined_attribute_of_a_scalar_is_explained() {
        let t = Templates::new();
        let err = t.render_str("{{ args.name.first }}", &ctx()).unwrap_err();
        assert_eq!(
            err,
            "template `{{ args.name.first }}`: undefined value 'args.name.first' ('args.name' is a string, it has no attributes)"
        );
        let err = t.render_str("{{ x.y }}", &json!({"x": null})).unwrap_err();
        assert_eq!(
            err,
            "template `{{ x.y }}`: undefined value 'x.y' ('x' is null)"
        );
        let err = t
            .render_str("{{ x.items.nope }}", &json!({"x": {"items": [1]}}))
            .unwrap_err();
        assert_eq!(
            err,
            "template `{{ x.items.nope }}`: undefined value (the template reads: x.items.nope)"
        );
    }

    #[test]
    fn multi_line_errors_point_at_the_line() {
        let t = Templates::new();
        let err = t
            .render_str("echo one\necho {{ args.nope }}\necho three\n", &ctx())
            .unwrap_err();
        assert!(
            err.starts_with("template line 2 `echo {{ args.nope }}`: undefined value 'args.nope'"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let t = Templates::new();
        let err = t.render_str("{{ args.name ", &ctx()).unwrap_err();
        assert!(
            err.starts_with("template `{{ args.name`: syntax error: "),
            "{err}"
        );
        let err = references("{% if x %}").unwrap_err();
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn other_runtime_errors_keep_minijinja_reason() {
        let t = Templates::new();
        let err = t
            .render_str("{{ args.name | nosuchfilter }}", &ctx())
            .unwrap_err();
        assert!(err.contains("nosuchfilter"), "{err}");
        assert!(
            err.starts_with("template `{{ args.name | nosuchfilter }}`: "),
            "{err}"
        );
    }

    #[test]
    fn single_expression_keeps_json_type() {
        let t = Templates::new();
        let c = ctx();
        assert_eq!(
            t.render_value(&json!("{{ args.count }}"), &c).unwrap(),
            json!(3)
        );
        assert_eq!(
            t.render_value(&json!("  {{ steps.plan.output.items }} "), &c)
                .unwrap(),
            json!([1, 2])
        );
        assert_eq!(
            t.render_value(&json!("{{ steps.plan.output.meta }}"), &c)
                .unwrap(),
            json!({"ok": true})
        );
        assert_eq!(
            t.render_value(&json!("{{- steps.plan.output.meta.ok -}}"), &c)
                .unwrap(),
            json!(true)
        );
        assert_eq!(
            t.render_value(&json!("{{ none }}"), &c).unwrap(),
            json!(null)
        );
        assert_eq!(
            t.render_value(&json!("{{ args.count + 1 }}"), &c).unwrap(),
            json!(4)
        );
        assert_eq!(
            t.render_value(&json!("{{ args.name }}"), &c).unwrap(),
            json!("world")
        );
        // more than one expression, or text around: a string
        assert_eq!(
            t.render_value(&json!("{{ args.count }}{{ args.count }}"), &c)
                .unwrap(),
            json!("33")
        );
        assert_eq!(
            t.render_value(&json!("n={{ args.count }}"), &c).unwrap(),
            json!("n=3")
        );
    }

    #[test]
    fn render_value_walks_the_tree() {
        let t = Templates::new();
        let v = json!({
            "cmd": "echo {{ args.name }}",
            "n": 5,
            "flag": false,
            "list": ["{{ run.workflow }}", {"deep": "{{ args.count }}"}],
            "{{ args.name }}": null
        });
        assert_eq!(
            t.render_value(&v, &ctx()).unwrap(),
            json!({
                "cmd": "echo world",
                "n": 5,
                "flag": false,
                "list": ["demo", {"deep": 3}],
                "{{ args.name }}": null
            })
        );
    }

    #[test]
    fn render_value_errors_name_the_path() {
        let t = Templates::new();
        let v = json!({"list": ["ok", {"deep": "{{ args.nope }}"}]});
        let err = t.render_value(&v, &ctx()).unwrap_err();
        assert_eq!(
            err,
            "list[1].deep: template `{{ args.nope }}`: undefined value 'args.nope' ('args' has keys: count, name)"
        );
        let err = t
            .render_value(&json!("{{ steps.plan.output.missing }}"), &ctx())
            .unwrap_err();
        assert!(
            err.contains("undefined value 'steps.plan.output.missing'"),
            "{err}"
        );
        let err = t
            .render_value(&json!("{{ args.name | nosuch }}"), &ctx())
            .unwrap_err();
        assert!(err.contains("nosuch"), "{err}");
    }

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression("{{ a.b }}"), Some(" a.b "));
        assert_eq!(single_expression(" {{a}}\n"), Some("a"));
        assert_eq!(single_expression("{{- a -}}"), Some(" a "));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("x {{ a }}"), None);
        assert_eq!(single_expression("{{ }}"), None);
        assert_eq!(single_expression("{% if a %}{{ a }}{% endif %}"), None);
    }

    #[test]
    fn references_of_nested_paths() {
        assert_eq!(
            refs("{{ steps.plan.output.items | length }} {{ args.name }} {{ run.id }}"),
            vec!["args.name", "run.id", "steps.plan.output.items"]
        );
        assert_eq!(refs("{{ args }}"), vec!["args"]);
        assert_eq!(refs("no templates here"), Vec::<String>::new());
    }

    #[test]
    fn references_skip_locals_and_globals() {
        assert_eq!(
            refs("{% for x in steps.a.output.list %}{{ x.name }}{{ loop.index }}{% endfor %}{% set y = 1 %}{{ y }}{{ range(3) | join }}"),
            vec!["steps.a.output.list"]
        );
    }

    #[test]
    fn references_in_blocks_and_filters() {
        assert_eq!(
            refs("{% if args.flag %}{{ steps.b.output.x | default(args.fallback) }}{% endif %}"),
            vec!["args.fallback", "args.flag", "steps.b.output.x"]
        );
    }

    #[test]
    fn shq_quotes_one_shell_word() {
        let t = Templates::new();
        let ctx = json!({ "args": { "x": "a'b; rm -rf / $(id) `id`\nnext", "n": 3 } });
        let rendered = t
            .render_str("echo {{ args.x | shq }} {{ args.n | shq }}", &ctx)
            .unwrap();
        assert_eq!(rendered, "echo 'a'\\''b; rm -rf / $(id) `id`\nnext' '3'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                t.render_str("{{ args.x | shq }}", &ctx).unwrap()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a'b; rm -rf / $(id) `id`\nnext"
        );
    }

    #[test]
    fn tojson_filter_is_available() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("{{ steps.plan.output.items | tojson }}", &ctx())
                .unwrap(),
            "[1,2]"
        );
    }

    #[test]
    fn templates_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
    }

    #[test]
    fn snippet_truncates_long_lines() {
        let long = "x".repeat(200);
        let s = snippet(&long, None);
        assert_eq!(s.chars().count(), 81);
        assert!(s.ends_with('…'));
    }
}

/// The template form of an `if:` condition: a bare expression
/// (`args.deploy and steps.test.status == "completed"`) or one wrapped in
/// `{{ }}`, rendered to `true` or `false` by minijinja's truthiness.
pub fn condition_template(condition: &str) -> String {
    let inner = condition_expression(condition);
    format!("{{% if ({inner}) %}}true{{% else %}}false{{% endif %}}")
}

/// The expression of an `if:` condition, without `{{ }}`.
fn condition_expression(condition: &str) -> &str {
    let trimmed = condition.trim();
    trimmed
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        .unwrap_or(trimmed)
        .trim()
}

/// Evaluate an `if:` condition against the run's context: truthiness, in
/// strict mode (an undefined name is an error, not false), and a
/// comparison of text with a number is an error (see [`super::compare`]).
pub fn evaluate_condition(
    templates: &Templates,
    condition: &str,
    ctx: &Value,
) -> Result<bool, String> {
    super::compare::check_comparisons(templates, condition_expression(condition), ctx)?;
    let rendered = templates.render_str(&condition_template(condition), ctx)?;
    Ok(rendered.trim() == "true")
}

#[cfg(test)]
mod condition_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_are_truthy_and_strict() {
        let t = Templates::new();
        let ctx = json!({"args": {"deploy": true, "n": 0, "name": "x"}, "steps": {"a": {"status": "failed"}}});
        assert!(evaluate_condition(&t, "args.deploy", &ctx).unwrap());
        assert!(evaluate_condition(&t, "{{ args.deploy }}", &ctx).unwrap());
        assert!(!evaluate_condition(&t, "args.n", &ctx).unwrap());
        assert!(evaluate_condition(&t, "steps.a.status == 'failed' and args.name", &ctx).unwrap());
        assert!(!evaluate_condition(&t, "not args.deploy", &ctx).unwrap());
        let error = evaluate_condition(&t, "args.missing", &ctx).unwrap_err();
        assert!(error.contains("undefined"), "{error}");
        assert_eq!(condition_template("{{ a }}"), condition_template("a"));
    }
}
