//! What a request gives the model — a conversation or a raw prompt — and the prompt "as
//! given" that its receipt hashes.

use serde_json::Value;
use zeroize::Zeroize;

use cocoon_runtime::tokenizer::ChatMessage;
use cocoon_runtime::Error;

use crate::engine::Loaded;

/// What the model is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A conversation, through the chat template.
    Messages(Vec<ChatMessage>),
    /// A raw prompt, no template (`/v1/completions`).
    Raw(String),
}

impl Input {
    /// The prompt "as given" whose SHA-256 the receipt records as `input.text_sha256`: the
    /// content of a conversation of one user message (so a receipt of `cocoon run --prompt
    /// TEXT` and one of the same single message hash alike), else the RFC 8785 text of the
    /// messages `[{"content", "role"}, …]`; a raw prompt as it is.
    pub fn receipt_text(&self) -> String {
        match self {
            Input::Raw(p) => p.clone(),
            Input::Messages(m) if m.len() == 1 && m[0].role == "user" => m[0].content.clone(),
            Input::Messages(m) => {
                let v: Vec<Value> = m
                    .iter()
                    .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                    .collect();
                // Strings only: canonicalization cannot fail.
                cocoon_runtime::jcs::canonicalize(&Value::Array(v)).unwrap_or_default()
            }
        }
    }

    /// Whether the chat template is applied.
    pub fn chat_template(&self) -> bool {
        matches!(self, Input::Messages(_))
    }
}

impl Input {
    /// Prompt ids, through the chat template for a conversation.
    pub fn ids(&self, model: &dyn Loaded) -> Result<Vec<u32>, Error> {
        match self {
            Input::Messages(m) => model.chat_ids(m),
            Input::Raw(p) => model.prompt_ids(p, true),
        }
    }

    /// Overwrites the text it holds (for plaintext that came sealed).
    pub fn zeroize(&mut self) {
        match self {
            Input::Messages(m) => m.iter_mut().for_each(|m| {
                m.content.zeroize();
                m.role.zeroize();
            }),
            Input::Raw(p) => p.zeroize(),
        }
    }
}
