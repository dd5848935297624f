//! What is inside a sealed request and a sealed response. Plaintext lives only in memory and is
//! zeroized when dropped.

use serde_json::{json, Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::error::SealError;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// What the model is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation, through the chat template.
    Messages(Vec<Message>),
    /// A prompt: through the chat template as one user message, or as is when `raw`.
    Text {
        /// The prompt.
        prompt: String,
        /// Without the chat template.
        raw: bool,
    },
}

/// The plaintext of a sealed request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestPlain {
    /// The prompt or conversation.
    pub prompt: Prompt,
    /// Generation parameters as the C API takes them (`max_tokens`, `temperature`, `top_p`,
    /// `top_k`, `seed`, and `stop`).
    pub params: Map<String, Value>,
    /// Hex SEC1 P-384 public key the answer is sealed to (fresh per request).
    pub reply_key: String,
    /// The marketplace's job identifier.
    pub job_id: Option<String>,
    /// The client's nonce (hex), bound into the receipt.
    pub nonce: Option<String>,
}

impl Drop for RequestPlain {
    fn drop(&mut self) {
        match &mut self.prompt {
            Prompt::Messages(m) => m.iter_mut().for_each(|m| m.content.zeroize()),
            Prompt::Text { prompt, .. } => prompt.zeroize(),
        }
    }
}

/// Reads a conversation: a non-empty list of `{"role": string, "content": string}` (nothing
/// else in a message). Errors never carry a value.
pub fn messages_from_json(v: &Value) -> Result<Vec<Message>, SealError> {
    let bad = |why: &str| SealError::malformed("messages", why.to_owned());
    let list = v.as_array().ok_or_else(|| bad("must be a list"))?;
    if list.is_empty() {
        return Err(bad("the list is empty"));
    }
    list.iter()
        .map(|m| {
            let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("role"), field("content"), m.as_object().map(Map::len)) {
                (Some(role), Some(content), Some(2)) => Ok(Message { role, content }),
                _ => Err(bad(
                    "each message is {\"role\": string, \"content\": string}",
                )),
            }
        })
        .collect()
}

/// Keys of the request's plaintext.
const REQUEST_KEYS: &[&str] = &[
    "messages",
    "prompt",
    "raw",
    "params",
    "reply_key",
    "job_id",
    "nonce",
];

impl RequestPlain {
    /// The UTF-8 JSON that is sealed.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = match &self.prompt {
            Prompt::Messages(m) => json!({"messages": m.iter()
                .map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>()}),
            Prompt::Text { prompt, raw } => json!({"prompt": prompt, "raw": raw}),
        };
        v["params"] = Value::Object(self.params.clone());
        v["reply_key"] = json!(self.reply_key);
        if let Some(j) = &self.job_id {
            v["job_id"] = json!(j);
        }
        if let Some(n) = &self.nonce {
            v["nonce"] = json!(n);
        }
        let bytes = Zeroizing::new(v.to_string().into_bytes());
        zeroize_value(&mut v);
        bytes
    }

    /// Reads an opened request. Errors name the field, never its value.
    pub fn parse(bytes: &[u8]) -> Result<Self, SealError> {
        let what = "sealed request";
        let bad = |why: &str| SealError::malformed(what, why.to_owned());
        let mut v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not UTF-8 JSON"))?;
        let result = (|| {
            let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
            if obj.keys().any(|k| !REQUEST_KEYS.contains(&k.as_str())) {
                return Err(bad("an unknown field"));
            }
            let string = |k: &str| -> Result<Option<String>, SealError> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(bad(&format!("`{k}` must be a string"))),
                }
            };
            let prompt = match (obj.get("messages"), string("prompt")?) {
                (Some(list @ Value::Array(_)), None) => Prompt::Messages(messages_from_json(list)?),
                (None, Some(prompt)) => Prompt::Text {
                    prompt,
                    raw: match obj.get("raw") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => return Err(bad("`raw` must be a boolean")),
                    },
                },
                _ => return Err(bad("give exactly one of `messages` (a list) and `prompt`")),
            };
            if obj.contains_key("raw") && matches!(prompt, Prompt::Messages(_)) {
                return Err(bad("`raw` goes with `prompt`, not `messages`"));
            }
            let params = match obj.get("params") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(_) => return Err(bad("`params` must be an object")),
            };
            Ok(RequestPlain {
                prompt,
                params,
                reply_key: string("reply_key")?.ok_or_else(|| bad("`reply_key` is required"))?,
                job_id: string("job_id")?,
                nonce: string("nonce")?,
            })
        })();
        zeroize_value(&mut v);
        result
    }
}

/// Overwrites every string inside a JSON value.
pub(crate) fn zeroize_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(zeroize_value),
        Value::Object(o) => o.values_mut().for_each(zeroize_value),
        _ => {}
    }
}

/// The plaintext of a sealed response.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsePlain {
    /// The answer's text.
    pub text: String,
    /// The generated token ids.
    pub output_ids: Vec<u32>,
    /// `stop` or `length`.
    pub finish: String,
    /// The receipt, whose body names the request (`sealed.request_sha256`).
    pub receipt: Value,
}

impl Drop for ResponsePlain {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl ResponsePlain {
    /// The UTF-8 JSON that is sealed.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = json!({"text": self.text, "output_ids": self.output_ids, "finish": self.finish,
            "receipt": self.receipt});
        let bytes = Zeroizing::new(v.to_string().into_bytes());
        zeroize_value(&mut v);
        bytes
    }

    /// Reads an opened response.
    pub fn parse(bytes: &[u8]) -> Result<Self, SealError> {
        let bad = |why: &str| SealError::malformed("sealed response", why.to_owned());
        let mut v: Value = serde_json::from_slice(bytes).map_err(|_| bad("not UTF-8 JSON"))?;
        let result = (|| {
            let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
            if obj.len() != 4 {
                return Err(bad("must hold exactly text, output_ids, finish, receipt"));
            }
            let text = obj
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("`text`"))?;
            let ids = obj
                .get("output_ids")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("`output_ids`"))?
                .iter()
                .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| bad("`output_ids` must be token ids"))?;
            let finish = obj
                .get("finish")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("`finish`"))?;
            let receipt = obj
                .get("receipt")
                .filter(|r| r.is_object())
                .ok_or_else(|| bad("`receipt`"))?;
            Ok(ResponsePlain {
                text: text.to_owned(),
                output_ids: ids,
                finish: finish.to_owned(),
                receipt: receipt.clone(),
            })
        })();
        zeroize_value(&mut v);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_and_refuse_without_echoing_values() {
        let r = RequestPlain {
            prompt: Prompt::Messages(vec![Message {
                role: "user".into(),
                content: "secret words".into(),
            }]),
            params: Map::from_iter([("max_tokens".to_string(), json!(8))]),
            reply_key: "04ab".into(),
            job_id: Some("j".into()),
            nonce: None,
        };
        assert_eq!(RequestPlain::parse(&r.to_bytes()).unwrap(), r);
        for bad in [
            r#"{"prompt":"secret words","messages":[],"reply_key":"x"}"#,
            r#"{"prompt":"secret words"}"#,
            r#"{"prompt":"secret words","reply_key":"x","extra":1}"#,
            r#"{"messages":[{"role":"user","content":"secret words","x":1}],"reply_key":"x"}"#,
            r#"{"messages":[{"role":"user","content":"secret words"}],"raw":true,"reply_key":"x"}"#,
        ] {
            let e = RequestPlain::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn responses_read_back() {
        let r = ResponsePlain {
            text: "hi".into(),
            output_ids: vec![1, 2],
            finish: "stop".into(),
            receipt: json!({"version": 1}),
        };
        assert_eq!(ResponsePlain::parse(&r.to_bytes()).unwrap(), r);
        assert!(ResponsePlain::parse(br#"{"text":"hi"}"#).is_err());
    }
}
