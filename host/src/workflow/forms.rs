//! Fields that may be written as one word or as a block: phases
//! (`build` or `{id: build}`), `on_failure` (`continue` or
//! `{escalate: skip}`), models (`openai/gpt-4o` or `{provider: …}`) and
//! `parallel` (`false` or `3`). A block keeps the strict checks (unknown
//! keys, with their position); a word is turned into the block it means.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::model::{FailureWord, ModelSpec, OnFailure, ParallelHint};

/// Deserializes a word (through `word`) or a block (a `B`, then `block`).
pub fn word_or_block<'de, D, B, T, W, F>(
    de: D,
    expecting: &'static str,
    word: W,
    block: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    B: Deserialize<'de>,
    W: FnOnce(&str) -> Result<T, String>,
    F: FnOnce(B) -> T,
{
    struct WordOrBlock<B, T, W, F> {
        expecting: &'static str,
        word: W,
        block: F,
        _types: PhantomData<(B, T)>,
    }
    impl<'de, B, T, W, F> Visitor<'de> for WordOrBlock<B, T, W, F>
    where
        B: Deserialize<'de>,
        W: FnOnce(&str) -> Result<T, String>,
        F: FnOnce(B) -> T,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.word)(text).map_err(E::custom)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let block = B::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok((self.block)(block))
        }
    }
    de.deserialize_any(WordOrBlock {
        expecting,
        word,
        block,
        _types: PhantomData,
    })
}

/// `on_failure:` as a block, or one of CodeCafe's words (`stop`,
/// `continue`, `retry`) or an escalation (`fail`, `skip`, `block`).
pub fn on_failure<'de, D: Deserializer<'de>>(de: D) -> Result<Option<OnFailure>, D::Error> {
    word_or_block(
        de,
        "an on_failure block or one of stop, continue, retry, fail, skip, block",
        |word: &str| {
            let mut on_failure = OnFailure::default();
            match word {
                "stop" => on_failure.word = Some(FailureWord::Stop),
                "continue" => on_failure.word = Some(FailureWord::Continue),
                "retry" => on_failure.word = Some(FailureWord::Retry),
                "fail" => on_failure.escalate = Some(super::model::Escalation::Fail),
                "skip" => on_failure.escalate = Some(super::model::Escalation::Skip),
                "block" => on_failure.escalate = Some(super::model::Escalation::Block),
                other => {
                    return Err(format!(
                        "unknown on_failure '{other}' (expected stop, continue, retry, fail, skip, \
                         block, or a block with escalate/retry_step)"
                    ))
                }
            }
            Ok(Some(on_failure))
        },
        |block: OnFailure| Some(block),
    )
}

/// A model: a `provider:` block, or a `provider/model` string.
pub fn model_spec<'de, D: Deserializer<'de>>(de: D) -> Result<ModelSpec, D::Error> {
    word_or_block(
        de,
        "a model block with `provider`, or a `provider/model` string",
        model_from_string,
        |block: ModelSpec| block,
    )
}

/// Well-known providers that speak the OpenAI chat-completions API: name,
/// base URL, environment variable of the key.
pub const KNOWN_PROVIDERS: &[(&str, &str, &str)] = &[
    ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    (
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
    ),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    (
        "deepseek",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
    ),
    ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    (
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
    ),
    ("ollama", "http://127.0.0.1:11434/v1", ""),
];

/// `provider/model` (the model may itself hold `/`, as OpenRouter's do):
/// an OpenAI-compatible endpoint for a known provider, else a named
/// provider that is refused when a step uses it.
fn model_from_string(text: &str) -> Result<ModelSpec, String> {
    let Some((provider, model)) = text.split_once('/') else {
        return Err(format!(
            "model '{text}': expected `provider/model` (e.g. openai/gpt-4o) or a block with `provider`"
        ));
    };
    if provider.is_empty() || model.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(format!(
            "model '{text}': expected `provider/model` (e.g. openai/gpt-4o)"
        ));
    }
    Ok(
        match KNOWN_PROVIDERS.iter().find(|(name, ..)| *name == provider) {
            Some((_, base_url, key)) => ModelSpec::Openai {
                base_url: base_url.to_string(),
                model: model.to_string(),
                api_key_env: (!key.is_empty()).then(|| key.to_string()),
                timeout: None,
            },
            None => ModelSpec::Named {
                name: provider.to_string(),
                model: model.to_string(),
            },
        },
    )
}

impl<'de> Deserialize<'de> for ParallelHint {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<ParallelHint, D::Error> {
        struct Hint;
        impl Visitor<'_> for Hint {
            type Value = ParallelHint;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or a number of steps at once")
            }

            fn visit_bool<E: de::Error>(self, flag: bool) -> Result<ParallelHint, E> {
                Ok(ParallelHint::Flag(flag))
            }

            fn visit_u64<E: de::Error>(self, count: u64) -> Result<ParallelHint, E> {
                if count == 0 {
                    return Err(E::custom("parallel must be at least 1"));
                }
                Ok(ParallelHint::Count(count.min(usize::MAX as u64) as usize))
            }

            fn visit_i64<E: de::Error>(self, count: i64) -> Result<ParallelHint, E> {
                match u64::try_from(count) {
                    Ok(count) => self.visit_u64(count),
                    Err(_) => Err(E::custom("parallel must be at least 1")),
                }
            }
        }
        de.deserialize_any(Hint)
    }
}

#[cfg(test)]
mod tests {
    use crate::workflow::model::{Escalation, Workflow};
    use crate::workflow::parse::{parse_str, Format};

    use super::*;

    fn parse(src: &str) -> Result<Workflow, String> {
        parse_str(src, "wf.yaml", Format::Yaml).map_err(|d| d.to_string())
    }

    #[test]
    fn phases_may_be_words_or_blocks() {
        let wf = parse("name: x\nphases: [build, {id: test, name: Test}]\nsteps: []\n").unwrap();
        assert_eq!(wf.phases[0].id, "build");
        assert!(wf.phases[0].written_as_string);
        assert_eq!(wf.phases[1].name.as_deref(), Some("Test"));
        assert!(!wf.phases[1].written_as_string);
        let error = parse("name: x\nphases:\n  - {id: a, colour: red}\nsteps: []\n").unwrap_err();
        assert!(error.contains("unknown field `colour`"), "{error}");
        assert!(error.starts_with("wf.yaml:3:"), "{error}");
        let error = parse("name: x\nphases: [3]\nsteps: []\n").unwrap_err();
        assert!(error.contains("a phase id or a block with `id`"), "{error}");
    }

    #[test]
    fn on_failure_words() {
        let wf = parse(
            "name: x\nsteps:\n  - {id: a, run: 'true', on_failure: continue}\n  - {id: b, run: 'true', on_failure: skip}\n",
        )
        .unwrap();
        let a = wf.steps[0].on_failure.as_ref().unwrap();
        assert_eq!(a.word, Some(FailureWord::Continue));
        let b = wf.steps[1].on_failure.as_ref().unwrap();
        assert_eq!(b.escalate, Some(Escalation::Skip));
        let error =
            parse("name: x\nsteps:\n  - {id: a, run: 'true', on_failure: later}\n").unwrap_err();
        assert!(error.contains("unknown on_failure 'later'"), "{error}");
        let error = parse(
            "name: x\nsteps:\n  - id: a\n    run: 'true'\n    on_failure: {escalate: skip, bogus: 1}\n",
        )
        .unwrap_err();
        assert!(error.contains("unknown field `bogus`"), "{error}");
    }

    #[test]
    fn models_as_provider_slash_model() {
        assert_eq!(
            model_from_string("openai/gpt-4o").unwrap(),
            ModelSpec::Openai {
                base_url: "https://api.openai.com/v1".into(),
                model: "gpt-4o".into(),
                api_key_env: Some("OPENAI_API_KEY".into()),
                timeout: None,
            }
        );
        assert_eq!(
            model_from_string("github-copilot/claude-opus-4.6").unwrap(),
            ModelSpec::Named {
                name: "github-copilot".into(),
                model: "claude-opus-4.6".into()
            }
        );
        match model_from_string("openrouter/anthropic/claude-3.5").unwrap() {
            ModelSpec::Openai { model, .. } => assert_eq!(model, "anthropic/claude-3.5"),
            other => panic!("{other:?}"),
        }
        for bad in ["gpt-4o", "/x", "x/", "open ai/x"] {
            assert!(model_from_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parallel_hints() {
        let wf = parse(
            "name: x\nparallel: 2\nsteps:\n  - {id: a, run: 'true', parallel: false}\n  - {id: b, run: 'true', parallel: true}\n",
        )
        .unwrap();
        assert_eq!(wf.parallel, Some(ParallelHint::Count(2)));
        assert_eq!(wf.steps[0].parallel, Some(ParallelHint::Flag(false)));
        assert_eq!(wf.steps[1].parallel, Some(ParallelHint::Flag(true)));
        let error = parse("name: x\nsteps:\n  - {id: a, run: 'true', parallel: 0}\n").unwrap_err();
        assert!(error.contains("at least 1"), "{error}");
        let error =
            parse("name: x\nsteps:\n  - {id: a, run: 'true', parallel: maybe}\n").unwrap_err();
        assert!(error.contains("true, false or a number"), "{error}");
    }
}
