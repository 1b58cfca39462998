//! Calling any exported function of any component (`type: function` with
//! `function: NAME` or `function: INTERFACE#NAME`): the step's `with:` is
//! converted to the function's parameters by their WIT types, and its
//! result back to JSON as the step's output.
//!
//! JSON ↔ WIT: numbers (range-checked integers, floats), strings, `char` (a
//! one-character string), `bool`; `list` and `tuple` ↔ arrays; `record` ↔
//! an object with the fields by name; `enum` ↔ the case's name; `variant` ↔
//! the case's name (no payload) or `{"case": payload}`; `option` ↔ `null` or
//! the value; `result` ↔ `{"ok": value}` or `{"err": value}`; `flags` ↔ an
//! array of the names that are set. A function whose result is a `result`
//! has the `ok` value as its output, and an `err` fails the step with it. Resources, futures and
//! streams cannot be given from JSON: such functions are refused.

use serde_json::{json, Map, Number, Value};
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, InstancePre, Type, Val};
use wasmtime::{Engine, Store};

use super::state::StepState;
use crate::step::bindings::types::StepError;

/// Call `function` of a fresh instance with the parameters `with` gives;
/// the output as JSON text, or why the call could not be made.
pub(super) async fn call(
    pre: &InstancePre<StepState>,
    store: &mut Store<StepState>,
    function: &str,
    with: &Value,
) -> wasmtime::Result<Result<String, StepError>> {
    let refuse = |message: String| Ok(Err(StepError::Permanent(message)));
    let component = pre.component();
    let engine = store.engine().clone();
    let Some(ty) = function_type(&engine, component, function) else {
        return refuse(format!(
            "the component exports no function `{function}`; it exports: {}",
            exported_functions(&engine, component).join(", ")
        ));
    };
    let params = match parameters(&ty, with) {
        Ok(params) => params,
        Err(message) => return refuse(format!("`with:` does not fit `{function}`: {message}")),
    };
    if let Err(message) = lift_fits(&ty, function, store.data().limits.memory_bytes) {
        return refuse(message);
    }
    let instance = pre.instantiate_async(&mut *store).await?;
    let func = match function.split_once('#') {
        Some((interface, name)) => instance
            .get_export_index(&mut *store, None, interface)
            .and_then(|index| instance.get_export_index(&mut *store, Some(&index), name))
            .and_then(|index| instance.get_func(&mut *store, index)),
        None => instance.get_func(&mut *store, function),
    };
    let Some(func) = func else {
        return refuse(format!("the component exports no function `{function}`"));
    };
    let mut results = vec![Val::Bool(false); ty.results().len()];
    func.call_async(&mut *store, &params, &mut results).await?;
    let output = match results.as_slice() {
        [] => Value::Null,
        [Val::Result(Err(error))] => {
            let error = error.as_deref().map_or(Value::Null, to_json);
            return refuse(format!(
                "`{function}` returned an error: {}",
                match &error {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                }
            ));
        }
        [Val::Result(Ok(value))] => value.as_deref().map_or(Value::Null, to_json),
        [one] => to_json(one),
        many => Value::Array(many.iter().map(to_json).collect()),
    };
    Ok(Ok(output.to_string()))
}

/// Host memory a function's result may take once lifted into values: a
/// quarter of the machine's memory, at most 4 GiB.
fn lift_budget() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(u64::try_from(page).unwrap_or(0));
    match physical {
        0 => 1 << 30,
        bytes => (bytes / 4).min(4 << 30),
    }
}

/// Whether the result of `ty` fits [`lift_budget`] whatever the guest
/// returns: each list element becomes a host value of
/// `size_of::<Val>()` bytes, so a list of bytes filling the guest's
/// memory (`memory_bytes`, its grant) expands many times over in the host.
/// Refused before the call, with the grant that would make it fit.
fn lift_fits(ty: &ComponentFunc, function: &str, memory_bytes: usize) -> Result<(), String> {
    let smallest = ty.results().filter_map(|t| smallest_list_element(&t)).min();
    let Some(element) = smallest else {
        return Ok(());
    };
    let factor = (std::mem::size_of::<Val>() as u64).div_ceil(element).max(1);
    let worst = (memory_bytes as u64).saturating_mul(factor);
    let budget = lift_budget();
    if worst <= budget {
        return Ok(());
    }
    let fits = budget / factor / (1 << 20);
    Err(format!(
        "`{function}` returns a list whose {element}-byte elements become {}-byte host values: \
         a result filling the step's {} MiB of memory would take {} MiB of the host's; give the \
         step `grants: {{ memory: {fits}MiB }}` or less",
        std::mem::size_of::<Val>(),
        memory_bytes >> 20,
        worst >> 20
    ))
}

/// The canonical-ABI size of the smallest list element in `ty`, if `ty`
/// holds a list.
fn smallest_list_element(ty: &Type) -> Option<u64> {
    let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match ty {
        Type::List(list) => {
            let element = list.ty();
            min(Some(abi_size(&element)), smallest_list_element(&element))
        }
        Type::Record(record) => record
            .fields()
            .fold(None, |m, f| min(m, smallest_list_element(&f.ty))),
        Type::Tuple(tuple) => tuple
            .types()
            .fold(None, |m, t| min(m, smallest_list_element(&t))),
        Type::Variant(variant) => variant.cases().fold(None, |m, c| {
            min(m, c.ty.as_ref().and_then(smallest_list_element))
        }),
        Type::Option(option) => smallest_list_element(&option.ty()),
        Type::Result(result) => min(
            result.ok().as_ref().and_then(smallest_list_element),
            result.err().as_ref().and_then(smallest_list_element),
        ),
        _ => None,
    }
}

/// A lower bound of a value's size in guest memory (canonical ABI).
fn abi_size(ty: &Type) -> u64 {
    match ty {
        Type::Bool | Type::S8 | Type::U8 => 1,
        Type::S16 | Type::U16 => 2,
        Type::S32 | Type::U32 | Type::Float32 | Type::Char | Type::Enum(_) | Type::Flags(_) => 4,
        Type::S64 | Type::U64 | Type::Float64 | Type::String | Type::List(_) => 8,
        Type::Record(record) => record.fields().map(|f| abi_size(&f.ty)).sum::<u64>().max(1),
        Type::Tuple(tuple) => tuple.types().map(|t| abi_size(&t)).sum::<u64>().max(1),
        // A discriminant byte, then the largest payload.
        Type::Variant(variant) => {
            1 + variant
                .cases()
                .map(|c| c.ty.as_ref().map_or(0, abi_size))
                .max()
                .unwrap_or(0)
        }
        Type::Option(option) => 1 + abi_size(&option.ty()),
        Type::Result(result) => {
            1 + result
                .ok()
                .map_or(0, |t| abi_size(&t))
                .max(result.err().map_or(0, |t| abi_size(&t)))
        }
        _ => 1,
    }
}

/// The type of the exported function `function` (`name` or
/// `interface#name`), if the component has one.
pub fn function_type(
    engine: &Engine,
    component: &Component,
    function: &str,
) -> Option<ComponentFunc> {
    let ty = component.component_type();
    match function.split_once('#') {
        Some((interface, name)) => match ty.get_export(engine, interface)?.ty {
            ComponentItem::ComponentInstance(instance) => {
                match instance.get_export(engine, name)?.ty {
                    ComponentItem::ComponentFunc(func) => Some(func),
                    _ => None,
                }
            }
            _ => None,
        },
        None => match ty.get_export(engine, function)?.ty {
            ComponentItem::ComponentFunc(func) => Some(func),
            _ => None,
        },
    }
}

/// Whether `with` can be the parameters of `function` (see
/// [`crate::runtime::Runtime::check_function`]).
pub(super) fn check(
    engine: &Engine,
    component: &Component,
    function: &str,
    with: &Value,
) -> Result<(), String> {
    let Some(ty) = function_type(engine, component, function) else {
        return Err(format!(
            "the component exports no function `{function}`; it exports: {}",
            exported_functions(engine, component).join(", ")
        ));
    };
    let templated = with
        .as_object()
        .is_some_and(|map| map.values().any(crate::workflow::template::holds_template));
    if !templated {
        return parameters(&ty, with)
            .map(|_| ())
            .map_err(|message| format!("`with:` does not fit `{function}`: {message}"));
    }
    let names: Vec<String> = ty.params().map(|(name, _)| name.to_string()).collect();
    for key in with.as_object().into_iter().flat_map(|map| map.keys()) {
        if !names
            .iter()
            .any(|name| name == key || name.replace('-', "_") == *key)
        {
            return Err(format!(
                "`with:` does not fit `{function}`: no parameter `{key}` (the parameters are: {})",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

fn exported_functions(engine: &Engine, component: &Component) -> Vec<String> {
    super::inspect::inspect(engine, component).exports
}

/// The parameters of `ty` from the object `with`, by name (`kebab-name` or
/// `snake_name`); a missing `option` parameter is `none`.
pub fn parameters(ty: &ComponentFunc, with: &Value) -> Result<Vec<Val>, String> {
    let empty = Map::new();
    let given = match with {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(format!(
                "expected an object of parameters, got {}",
                kind(other)
            ))
        }
    };
    let names: Vec<String> = ty.params().map(|(name, _)| name.to_string()).collect();
    for key in given.keys() {
        if !names
            .iter()
            .any(|name| *name == *key || name.replace('-', "_") == *key)
        {
            return Err(format!(
                "no parameter `{key}` (the parameters are: {})",
                names.join(", ")
            ));
        }
    }
    ty.params()
        .map(|(name, ty)| {
            let value = given
                .get(name)
                .or_else(|| given.get(&name.replace('-', "_")));
            match (value, &ty) {
                (None, Type::Option(_)) => Ok(Val::Option(None)),
                (None, _) => Err(format!("missing parameter `{name}` ({})", describe(&ty))),
                (Some(value), _) => from_json(value, &ty, name),
            }
        })
        .collect()
}

/// `value` as a value of `ty`; errors name `path` and the expected type.
// `i64::try_from(i64)` in the integer macro: one macro for every width.
#[allow(clippy::useless_conversion)]
fn from_json(value: &Value, ty: &Type, path: &str) -> Result<Val, String> {
    let wrong = || {
        Err(format!(
            "`{path}`: expected {}, got {}",
            describe(ty),
            kind(value)
        ))
    };
    macro_rules! int {
        ($variant:ident, $t:ty) => {{
            // `Some(None)`: a whole number out of the type's range.
            let parsed: Option<Option<$t>> = if let Some(n) = value.as_i64() {
                Some(<$t>::try_from(n).ok())
            } else {
                value.as_u64().map(|n| <$t>::try_from(n).ok())
            };
            match parsed {
                Some(Some(n)) => Ok(Val::$variant(n)),
                Some(None) => Err(format!(
                    "`{path}`: {value} is out of range for {}",
                    describe(ty)
                )),
                None => wrong(),
            }
        }};
    }
    match ty {
        Type::Bool => value.as_bool().map(Val::Bool).map_or_else(wrong, Ok),
        Type::S8 => int!(S8, i8),
        Type::U8 => int!(U8, u8),
        Type::S16 => int!(S16, i16),
        Type::U16 => int!(U16, u16),
        Type::S32 => int!(S32, i32),
        Type::U32 => int!(U32, u32),
        Type::S64 => int!(S64, i64),
        Type::U64 => int!(U64, u64),
        Type::Float32 => value
            .as_f64()
            .map(|f| Val::Float32(f as f32))
            .map_or_else(wrong, Ok),
        Type::Float64 => value.as_f64().map(Val::Float64).map_or_else(wrong, Ok),
        Type::Char => match value.as_str().map(|s| {
            let mut chars = s.chars();
            (chars.next(), chars.next())
        }) {
            Some((Some(c), None)) => Ok(Val::Char(c)),
            _ => wrong(),
        },
        Type::String => value
            .as_str()
            .map(|s| Val::String(s.to_string()))
            .map_or_else(wrong, Ok),
        Type::List(list) => match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| from_json(item, &list.ty(), &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Val::List),
            _ => wrong(),
        },
        Type::Tuple(tuple) => match value {
            Value::Array(items) if items.len() == tuple.types().len() => items
                .iter()
                .zip(tuple.types())
                .enumerate()
                .map(|(i, (item, ty))| from_json(item, &ty, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Val::Tuple),
            _ => wrong(),
        },
        Type::Record(record) => {
            let Value::Object(map) = value else {
                return wrong();
            };
            let names: Vec<&str> = record.fields().map(|field| field.name).collect();
            if let Some(extra) = map.keys().find(|key| {
                !names
                    .iter()
                    .any(|name| name == key || name.replace('-', "_") == **key)
            }) {
                return Err(format!(
                    "`{path}`: no field `{extra}` in {} (its fields: {})",
                    describe(ty),
                    names.join(", ")
                ));
            }
            record
                .fields()
                .map(|field| {
                    let value = map
                        .get(field.name)
                        .or_else(|| map.get(&field.name.replace('-', "_")));
                    let at = format!("{path}.{}", field.name);
                    let val = match (value, &field.ty) {
                        (None, Type::Option(_)) => Ok(Val::Option(None)),
                        (None, _) => {
                            Err(format!("`{at}`: missing field ({})", describe(&field.ty)))
                        }
                        (Some(value), ty) => from_json(value, ty, &at),
                    }?;
                    Ok((field.name.to_string(), val))
                })
                .collect::<Result<_, String>>()
                .map(Val::Record)
        }
        Type::Enum(cases) => match value.as_str() {
            Some(name) if cases.names().any(|case| case == name) => Ok(Val::Enum(name.to_string())),
            _ => wrong(),
        },
        Type::Variant(variant) => {
            let (name, payload) = match value {
                Value::String(name) => (name.as_str(), None),
                Value::Object(map) if map.len() == 1 => {
                    let (name, payload) = map.iter().next().expect("one entry");
                    (name.as_str(), Some(payload))
                }
                _ => return wrong(),
            };
            let Some(case) = variant.cases().find(|case| case.name == name) else {
                return wrong();
            };
            match (&case.ty, payload) {
                (None, None | Some(Value::Null)) => Ok(Val::Variant(name.to_string(), None)),
                (Some(ty), Some(payload)) => Ok(Val::Variant(
                    name.to_string(),
                    Some(Box::new(from_json(payload, ty, &format!("{path}.{name}"))?)),
                )),
                _ => wrong(),
            }
        }
        Type::Option(option) => match value {
            Value::Null => Ok(Val::Option(None)),
            value => Ok(Val::Option(Some(Box::new(from_json(
                value,
                &option.ty(),
                path,
            )?)))),
        },
        Type::Result(result) => {
            let Value::Object(map) = value else {
                return wrong();
            };
            let side = |key: &str, ty: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match (ty, map.get(key)) {
                    (None, None | Some(Value::Null)) => Ok(None),
                    (Some(ty), Some(value)) => Ok(Some(Box::new(from_json(
                        value,
                        &ty,
                        &format!("{path}.{key}"),
                    )?))),
                    _ => Err(format!(
                        "`{path}.{key}`: expected {}",
                        describe(&Type::Result(result.clone()))
                    )),
                }
            };
            match (map.len(), map.contains_key("ok"), map.contains_key("err")) {
                (1, true, false) => Ok(Val::Result(Ok(side("ok", result.ok())?))),
                (1, false, true) => Ok(Val::Result(Err(side("err", result.err())?))),
                _ => wrong(),
            }
        }
        Type::Flags(flags) => match value {
            Value::Array(items) => {
                let mut set = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(name) if flags.names().any(|flag| flag == name) => {
                            set.push(name.to_string())
                        }
                        _ => return wrong(),
                    }
                }
                Ok(Val::Flags(set))
            }
            _ => wrong(),
        },
        _ => Err(format!(
            "`{path}`: {} cannot be given as JSON",
            describe(ty)
        )),
    }
}

/// A result value as JSON (see the module doc).
fn to_json(val: &Val) -> Value {
    match val {
        Val::Bool(b) => Value::Bool(*b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        Val::Float64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, val)| (name.clone(), to_json(val)))
                .collect(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => Value::String(name.clone()),
        Val::Variant(name, Some(payload)) => json!({ name.clone(): to_json(payload) }),
        Val::Option(None) => Value::Null,
        Val::Option(Some(val)) => to_json(val),
        Val::Result(Ok(val)) => json!({ "ok": val.as_deref().map_or(Value::Null, to_json) }),
        Val::Result(Err(val)) => json!({ "err": val.as_deref().map_or(Value::Null, to_json) }),
        Val::Flags(names) => json!(names),
        Val::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            Value::String("<handle>".to_string())
        }
    }
}

/// A WIT type as a reader writes it.
fn describe(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", describe(&list.ty())),
        Type::Tuple(tuple) => format!(
            "tuple<{}>",
            tuple
                .types()
                .map(|t| describe(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Record(record) => format!(
            "record {{ {} }}",
            record
                .fields()
                .map(|f| format!("{}: {}", f.name, describe(&f.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(cases) => format!(
            "enum {{ {} }}",
            cases.names().collect::<Vec<_>>().join(", ")
        ),
        Type::Variant(variant) => format!(
            "variant {{ {} }}",
            variant
                .cases()
                .map(|c| match &c.ty {
                    Some(ty) => format!("{}({})", c.name, describe(ty)),
                    None => c.name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Option(option) => format!("option<{}>", describe(&option.ty())),
        Type::Result(result) => format!(
            "result<{}, {}>",
            result.ok().map_or("_".to_string(), |t| describe(&t)),
            result.err().map_or("_".to_string(), |t| describe(&t))
        ),
        Type::Flags(flags) => format!(
            "flags {{ {} }}",
            flags.names().collect::<Vec<_>>().join(", ")
        ),
        Type::Own(_) | Type::Borrow(_) => "a resource".into(),
        _ => "a handle type".into(),
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
