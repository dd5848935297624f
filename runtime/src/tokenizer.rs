//! Text ↔ token ids with the model's `tokenizer.json`, chat templates from
//! `tokenizer_config.json` rendered as Hugging Face renders them, and streaming detokenization.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

use crate::clock::UtcTime;
use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::pinned::{PinnedModel, GENERATION_CONFIG, TOKENIZER, TOKENIZER_CONFIG};

/// The model's tokenizer, chat template and end-of-sequence ids.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    /// The special tokens `tokenizer_config.json` names (`bos_token`, `eos_token`, …), passed
    /// to the chat template as Hugging Face passes its `special_tokens_map`.
    special_tokens: Vec<(&'static str, String)>,
    eos_ids: Vec<u32>,
}

/// Longest token text accepted in a vocabulary.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Most bytes a normalizer, pre-tokenizer, post-processor or decoder of `tokenizer.json` may
/// insert in one place (a `Replace`'s content, a `Prepend`, a `Metaspace` replacement).
pub const MAX_INSERTED_BYTES: usize = 256;

/// How many times longer than the text a normalized text may be (Unicode's NFKC makes one
/// character at most 18 long; anything beyond is a tokenizer made to exhaust memory).
pub const MAX_NORMALIZED_GROWTH: usize = 32;

/// Bytes a normalized text may have beyond [`MAX_NORMALIZED_GROWTH`] times its length.
const NORMALIZED_SLACK: usize = 4096;

/// Bytes of text normalized at a time when checking the normalized size.
const NORMALIZE_PIECE: usize = 4096;

/// Refuses a part of `tokenizer.json` that would insert more than [`MAX_INSERTED_BYTES`] in
/// one place: the `content` of `Replace`, the `prepend` of `Prepend` and the `replacement` of
/// `Metaspace`, wherever they sit in sequences. Other strings (patterns, the vocabulary) insert
/// nothing.
fn check_inserted_text(part: &str, v: &Value) -> Result<()> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| check_inserted_text(part, i)),
        Value::Object(o) => {
            for key in ["content", "prepend", "replacement"] {
                if let Some(Value::String(text)) = o.get(key) {
                    if text.len() > MAX_INSERTED_BYTES {
                        return Err(Error::format(
                            TOKENIZER,
                            format!(
                                "the {part}'s {} inserts {} bytes at a time, more than {MAX_INSERTED_BYTES}",
                                o.get("type").and_then(Value::as_str).map_or_else(
                                    || "component".to_owned(),
                                    |t| format!("{} component", crate::escape::shown(t))
                                ),
                                text.len()
                            ),
                        ));
                    }
                }
            }
            o.values().try_for_each(|i| check_inserted_text(part, i))
        }
        _ => Ok(()),
    }
}

/// The special-token keys of `tokenizer_config.json` that templates may read.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl TextTokenizer {
    /// Builds the tokenizer from the verified files of a model.
    pub fn from_model(files: &PinnedModel, config: &LlamaConfig) -> Result<Self> {
        let tokenizer_json = files.required(TOKENIZER)?;
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::format(TOKENIZER, format!("invalid tokenizer: {e}")))?;
        let parsed: Value = serde_json::from_slice(tokenizer_json)
            .map_err(|e| Error::format(TOKENIZER, format!("invalid JSON: {e}")))?;
        for part in ["normalizer", "pre_tokenizer", "post_processor", "decoder"] {
            check_inserted_text(part, &parsed[part])?;
        }
        let tc: Value = match files.file(TOKENIZER_CONFIG) {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::format(TOKENIZER_CONFIG, format!("invalid JSON: {e}")))?,
            None => Value::Null,
        };
        let token_text = |key: &str| match &tc[key] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        let special_tokens = SPECIAL_TOKEN_KEYS
            .iter()
            .filter_map(|k| token_text(k).map(|t| (*k, t)))
            .collect();
        let chat_template = match &tc["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_owned),
            _ => None,
        };
        // Every id the tokenizer can produce must be a row of the model's embedding, and no
        // token may be absurdly long (a 10 MB token would make every decode crawl).
        let tokenizer_size = inner.get_vocab_size(true);
        if tokenizer_size > config.vocab_size {
            return Err(Error::format(
                TOKENIZER,
                format!(
                    "the tokenizer has {tokenizer_size} tokens, more than the model's vocabulary of {}",
                    config.vocab_size
                ),
            ));
        }
        let vocab = inner.get_vocab(true);
        if let Some((token, id)) = vocab
            .iter()
            .find(|(t, id)| t.len() > MAX_TOKEN_BYTES || **id as usize >= config.vocab_size)
        {
            return Err(Error::format(
                TOKENIZER,
                format!(
                    "token {} (id {id}, {} bytes) is longer than {MAX_TOKEN_BYTES} bytes or outside the model's vocabulary of {}",
                    crate::escape::shown(token),
                    token.len(),
                    config.vocab_size
                ),
            ));
        }
        let mut eos_ids = config.eos_token_ids.clone();
        if let Some(bytes) = files.file(GENERATION_CONFIG) {
            let gc: Value = serde_json::from_slice(bytes)
                .map_err(|e| Error::format(GENERATION_CONFIG, format!("invalid JSON: {e}")))?;
            let extra: Vec<u64> = match &gc["eos_token_id"] {
                Value::Number(n) => n.as_u64().into_iter().collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_u64).collect(),
                _ => vec![],
            };
            eos_ids.extend(extra.into_iter().filter_map(|i| u32::try_from(i).ok()));
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(TextTokenizer {
            inner,
            chat_template,
            special_tokens,
            eos_ids,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS…)
    /// as `tokenizer(text)` does in Hugging Face. A text its normalizer would make more than
    /// [`MAX_NORMALIZED_GROWTH`] times longer is refused before it is tokenized.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.check_normalized_size(text)?;
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::InvalidRequest(format!("tokenizing: {e}")))
    }

    /// Normalizes `text` a piece at a time (each piece's output bounded by the inserted-text
    /// bound checked at load) and refuses it when the whole would grow past
    /// [`MAX_NORMALIZED_GROWTH`] times its length: the tokenizer then never holds a normalized
    /// text of unbounded size.
    fn check_normalized_size(&self, text: &str) -> Result<()> {
        use tokenizers::{NormalizedString, Normalizer};
        let Some(normalizer) = self.inner.get_normalizer() else {
            return Ok(());
        };
        let limit = text.len().saturating_mul(MAX_NORMALIZED_GROWTH) + NORMALIZED_SLACK;
        let mut total = 0usize;
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(NORMALIZE_PIECE);
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let mut piece = NormalizedString::from(&rest[..end]);
            normalizer
                .normalize(&mut piece)
                .map_err(|e| Error::InvalidRequest(format!("normalizing: {e}")))?;
            total += piece.get().len();
            if total > limit {
                return Err(Error::InvalidRequest(format!(
                    "the tokenizer's normalizer makes this {}-byte text more than {MAX_NORMALIZED_GROWTH} times longer",
                    text.len()
                )));
            }
            rest = &rest[end..];
        }
        Ok(())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::InvalidRequest(format!("detokenizing: {e}")))
    }

    /// End-of-sequence ids (config and generation config together).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders one user message with the chat template and the generation prompt, as
    /// `apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)`
    /// does: the special tokens the config names, `tools` and `documents` none, and the
    /// functions Hugging Face adds, `raise_exception(msg)` and `strftime_now(format)` (which
    /// reads the clock in UTC: the LLaMA 3.x templates put today's date in the system header,
    /// so the prompt's tokens depend on the day, as they do with `transformers`).
    pub fn render_chat(&self, prompt: &str) -> Result<String> {
        self.render_chat_at(prompt, UtcTime::now())
    }

    /// [`TextTokenizer::render_chat`] with `strftime_now` reading `now`.
    pub fn render_chat_at(&self, prompt: &str, now: UtcTime) -> Result<String> {
        self.render_messages_at(&[ChatMessage::user(prompt)], now)
    }

    /// Renders a conversation (system, user and assistant messages) with the chat template and
    /// the generation prompt, as [`TextTokenizer::render_chat`] does for one user message.
    pub fn render_messages_at(&self, messages: &[ChatMessage], now: UtcTime) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::InvalidRequest("the model has no chat template; give the prompt raw".into())
        })?;
        render_chat_template(template, &self.special_tokens, messages, now)
    }
}

/// One message of a conversation given to a chat template.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: &str) -> Self {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// Renders `template` for `messages` with the generation prompt, as
/// [`TextTokenizer::render_chat`] describes.
pub fn render_chat_template(
    template: &str,
    special_tokens: &[(&str, String)],
    messages: &[ChatMessage],
    now: UtcTime,
) -> Result<String> {
    let mut env = Environment::new();
    let bad = |e: minijinja::Error| Error::format(TOKENIZER_CONFIG, format!("chat template: {e}"));
    // Hugging Face renders with jinja2's trim_blocks and lstrip_blocks.
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(bad)?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function(
        "strftime_now",
        move |format: String| -> Result<String, minijinja::Error> {
            now.strftime(&format)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))
        },
    );
    // transformers' tojson is Python's json.dumps (insertion order, no HTML escapes).
    env.add_filter(
        "tojson",
        |v: minijinja::Value, k: minijinja::value::Kwargs| crate::pyjson::tojson(&v, k),
    );
    // A template is untrusted input: its work and its output are bounded (nested loops of
    // 10^5 × 10^5 end with an error instead of running for hours).
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_template("chat", template).map_err(bad)?;
    let mut ctx: BTreeMap<&str, minijinja::Value> = special_tokens
        .iter()
        .map(|(k, v)| (*k, minijinja::Value::from(v.as_str())))
        .collect();
    ctx.insert(
        "messages",
        minijinja::Value::from(
            messages
                .iter()
                .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
                .collect::<Vec<_>>(),
        ),
    );
    ctx.insert("add_generation_prompt", true.into());
    ctx.insert("tools", minijinja::Value::from(()));
    ctx.insert("documents", minijinja::Value::from(()));
    let text = env
        .get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(bad)?;
    if text.len() > MAX_RENDERED_BYTES {
        return Err(Error::InvalidRequest(format!(
            "the chat template rendered {} bytes, more than the {MAX_RENDERED_BYTES} allowed",
            text.len()
        )));
    }
    Ok(text)
}

/// Instructions a chat template may run per rendering (the LLaMA 3.2 template uses a few
/// thousand for one message).
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Largest rendered prompt.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Turns a growing list of ids into text pieces, holding back incomplete UTF-8 sequences.
///
/// Each push decodes only a window: the ids from `prefix` (where the last emitted piece's
/// context starts) to the end, and subtracts the text of the same window without the new ids.
/// Decoding from the same start on both sides keeps what a decoder does at the start of a
/// text (a stripped leading space) out of the difference, and the cost of a piece does not
/// grow with the length of the output.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    /// Start of the decoding window.
    prefix: usize,
    /// End of the ids whose text was emitted.
    read: usize,
}

impl<'a> TextStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one id; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = self.tokenizer.decode(&self.ids[self.prefix..])?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= before.len()
            || !text.is_char_boundary(before.len())
        {
            return Ok(None);
        }
        let piece = text[before.len()..].to_owned();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> UtcTime {
        UtcTime::from_system(UNIX_EPOCH + Duration::from_secs(1_795_593_845))
    }

    #[test]
    fn the_llama_3_2_template_renders_as_transformers_does() {
        // Expected output from tests/golden/chat_template.py (jinja2 set up as transformers
        // sets it up), same prompt, tokens and clock.
        let template = include_str!("../../tests/fixtures/templates/llama-3.2.jinja");
        let want = include_str!("../../tests/fixtures/templates/llama-3.2.expected");
        let tokens = [
            ("bos_token", "<|begin_of_text|>".to_owned()),
            ("eos_token", "<|eot_id|>".to_owned()),
        ];
        let got = render_chat_template(
            template,
            &tokens,
            &[ChatMessage::user("Héllo, wörld!  ")],
            now(),
        )
        .unwrap();
        assert_eq!(got, want);
        assert!(got.contains("Today Date: 25 Nov 2026\n"));
    }

    #[test]
    fn templates_cannot_run_or_print_without_bound() {
        let render = |t: &str| render_chat_template(t, &[], &[ChatMessage::user("hi")], now());
        let e = render(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fuel"), "{e}");
        let e = render("{{ messages | tojson(indent=1000000000000) }}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("indent above 64"), "{e}");
    }

    #[test]
    fn tools_are_none_and_template_errors_are_named() {
        let render = |t: &str| render_chat_template(t, &[], &[ChatMessage::user("hi")], now());
        // transformers passes tools=None: defined, and none.
        assert_eq!(
            render("{% if tools is defined %}d{% endif %}{% if tools is not none %}T{% endif %}")
                .unwrap(),
            "d"
        );
        // `tojson` as transformers defines it: Python's json.dumps, insertion order kept.
        assert_eq!(
            render(r#"{{ {"b": [1, 2], "a": "é<"} | tojson }}"#).unwrap(),
            r#"{"b": [1, 2], "a": "é<"}"#
        );
        assert_eq!(render("{{ bos_token }}|").unwrap(), "|");
        let err = render("{{ raise_exception('only one turn') }}").unwrap_err();
        assert!(err.to_string().contains("only one turn"), "{err}");
        let err = render("{{ strftime_now('%Q') }}").unwrap_err();
        assert!(err.to_string().contains("%Q is not supported"), "{err}");
    }
}
