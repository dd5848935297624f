//! Text ↔ token ids with the model's `tokenizer.json`, chat templates from
//! `tokenizer_config.json` rendered as Hugging Face renders them, and streaming detokenization.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::pinned::{PinnedModel, GENERATION_CONFIG, TOKENIZER, TOKENIZER_CONFIG};

/// The model's tokenizer, chat template and end-of-sequence ids.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: String,
    eos_token: String,
    eos_ids: Vec<u32>,
}

impl TextTokenizer {
    /// Builds the tokenizer from the verified files of a model.
    pub fn from_model(files: &PinnedModel, config: &LlamaConfig) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(files.required(TOKENIZER)?)
            .map_err(|e| Error::format(TOKENIZER, format!("invalid tokenizer: {e}")))?;
        let tc: Value = match files.file(TOKENIZER_CONFIG) {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::format(TOKENIZER_CONFIG, format!("invalid JSON: {e}")))?,
            None => Value::Null,
        };
        let token_text = |key: &str| match &tc[key] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        let chat_template = match &tc["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_owned),
            _ => None,
        };
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
            bos_token: token_text("bos_token"),
            eos_token: token_text("eos_token"),
            eos_ids,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS…)
    /// as `tokenizer(text)` does in Hugging Face.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::InvalidRequest(format!("tokenizing: {e}")))
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
    /// `apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)`.
    pub fn render_chat(&self, prompt: &str) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::InvalidRequest("the model has no chat template; use --raw".into())
        })?;
        let mut env = Environment::new();
        let bad =
            |e: minijinja::Error| Error::format(TOKENIZER_CONFIG, format!("chat template: {e}"));
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
        env.add_template("chat", template).map_err(bad)?;
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => prompt }],
            add_generation_prompt => true,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(bad)
    }
}

/// Turns a growing list of ids into text pieces, holding back incomplete UTF-8 sequences.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds one id; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_owned();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}
