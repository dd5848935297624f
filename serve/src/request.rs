//! OpenAI request bodies, read into a typed [`Job`] (docs/serve.md lists every field).
//!
//! Fail closed: a field the server does not know is a 400 naming it, a field that would change
//! the answer and is not supported (`n` > 1, `logprobs`, tools…) is a 400 naming it, and the
//! fields a COCOON worker forwards that do not change the answer are accepted and ignored.

use serde_json::{Map, Value};

use cocoon_runtime::sampling::MAX_SEED;
use cocoon_runtime::tokenizer::ChatMessage;

pub use cocoon_engine::input::Input;
use cocoon_runtime::SamplingParams;

use crate::error::ApiError;

/// Most stop sequences a request may give.
pub const MAX_STOPS: usize = 16;
/// Longest stop sequence, bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most messages in a conversation.
pub const MAX_MESSAGES: usize = 1024;

/// Which endpoint a body was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

impl Endpoint {
    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }
}

/// A request, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model name the client asked for.
    pub model: String,
    /// Prompt or conversation.
    pub input: Input,
    /// Sampling; `max_tokens` is the request's, or the server's limit when it gave none.
    pub params: SamplingParams,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Server-sent events (or NDJSON) instead of one object.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `cocoon.nonce`: the client's nonce for the receipt (hex).
    pub nonce: Option<String>,
}

/// Limits the server applies while reading a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest `max_tokens` accepted (and the default).
    pub max_tokens: u32,
}

/// Fields accepted and ignored: they do not change the answer (docs/serve.md).
const IGNORED: &[&str] = &[
    "user",
    "store",
    "metadata",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "verbosity",
    "parallel_tool_calls",
    "skip_special_tokens",
    // A COCOON worker's end-to-end encryption fields (its relay, not the engine, uses them).
    "is_encrypted",
    "sender_public_key",
    "receiver_public_key",
    "encryption_nonce",
];

/// Fields that would change the answer and are not supported, unless null or empty.
const UNSUPPORTED: &[&str] = &[
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "suffix",
    "min_p",
    "repetition_penalty",
];

/// Reads a request body sent to `endpoint`.
pub fn parse(endpoint: Endpoint, body: &[u8], limits: Limits) -> Result<Job, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let mut seed = None;
    let mut params = SamplingParams {
        max_tokens: limits.max_tokens,
        ..Default::default()
    };
    let mut max_tokens: Option<u32> = None;
    let mut job = Job {
        endpoint,
        model: String::new(),
        input: Input::Raw(String::new()),
        params: params.clone(),
        stop: Vec::new(),
        stream: false,
        include_usage: false,
        nonce: None,
    };
    let mut have_input = false;
    let mut have_model = false;
    for (key, v) in &obj {
        let k = key.as_str();
        match (k, endpoint) {
            ("model", _) => {
                job.model = string(k, v)?;
                have_model = true;
            }
            ("messages", Endpoint::Chat) => {
                job.input = Input::Messages(messages(v)?);
                have_input = true;
            }
            ("prompt", Endpoint::Completions) => {
                job.input = Input::Raw(prompt(v)?);
                have_input = true;
            }
            ("max_tokens" | "max_completion_tokens", _) => {
                if v.is_null() {
                    continue;
                }
                let n = integer(k, v, 1, u64::from(limits.max_tokens)).map_err(|e| {
                    ApiError::field(
                        k,
                        format!(
                            "{} (this server's limit is {})",
                            e.message, limits.max_tokens
                        ),
                    )
                })? as u32;
                // A COCOON worker writes both: the smaller bounds the answer.
                max_tokens = Some(max_tokens.map_or(n, |m| m.min(n)));
            }
            ("temperature", _) => {
                if let Some(t) = number(k, v, 0.0, 2.0)? {
                    params.temperature = t as f32;
                }
            }
            ("top_p", _) => {
                if let Some(p) = number(k, v, 0.0, 1.0)? {
                    if p == 0.0 {
                        return Err(ApiError::field(k, "must be above 0"));
                    }
                    params.top_p = p as f32;
                }
            }
            ("top_k", _) => {
                // An extension (vLLM, SGLang): -1 or 0 keeps every token.
                if !v.is_null() {
                    let n = v
                        .as_i64()
                        .filter(|n| (-1..=i64::from(u32::MAX)).contains(n))
                        .ok_or_else(|| ApiError::field(k, "must be an integer, -1 or more"))?;
                    params.top_k = n.max(0) as u32;
                }
            }
            ("seed", _) => {
                if !v.is_null() {
                    seed = Some(integer(k, v, 0, MAX_SEED)?);
                }
            }
            ("stop", _) => job.stop = stops(v)?,
            ("stream", _) => job.stream = boolean(k, v)?.unwrap_or(false),
            ("stream_options", _) => job.include_usage = stream_options(v)?,
            ("n" | "best_of", _) => {
                if !v.is_null() && v.as_u64() != Some(1) {
                    return Err(ApiError::field(k, "only 1 is supported"));
                }
            }
            ("presence_penalty" | "frequency_penalty", _) => {
                if !v.is_null() && v.as_f64() != Some(0.0) {
                    return Err(ApiError::field(k, "only 0 is supported"));
                }
            }
            ("logprobs" | "echo", _) => {
                // Chat's `logprobs` is a boolean, completions' a count.
                if !(v.is_null() || *v == Value::Bool(false) || v.as_u64() == Some(0)) {
                    return Err(ApiError::field(k, "is not supported"));
                }
            }
            ("top_logprobs", _) => {
                if !(v.is_null() || v.as_u64() == Some(0)) {
                    return Err(ApiError::field(k, "is not supported"));
                }
            }
            ("response_format", _) => {
                let text = v.is_null()
                    || v.get("type").and_then(Value::as_str) == Some("text")
                        && v.as_object().is_some_and(|o| o.len() == 1);
                if !text {
                    return Err(ApiError::field(k, "only {\"type\": \"text\"} is supported"));
                }
            }
            ("chat_template_kwargs", Endpoint::Chat) => chat_template_kwargs(v)?,
            ("cocoon", _) => job.nonce = cocoon_options(v)?,
            _ if IGNORED.contains(&k) => {}
            _ if UNSUPPORTED.contains(&k) => {
                let empty = v.is_null()
                    || v.as_array().is_some_and(Vec::is_empty)
                    || v.as_object().is_some_and(Map::is_empty)
                    || (k == "tool_choice" && v.as_str() == Some("none"));
                if !empty {
                    return Err(ApiError::field(k, "is not supported by this server"));
                }
            }
            _ => {
                return Err(ApiError::field(
                    &cocoon_runtime::escape::shown(k),
                    "unknown field",
                ))
            }
        }
    }
    if !have_model {
        return Err(ApiError::field("model", "is required"));
    }
    if !have_input {
        let name = match endpoint {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
        };
        return Err(ApiError::field(name, "is required"));
    }
    if job.include_usage && !job.stream {
        return Err(ApiError::field(
            "stream_options",
            "is only allowed when `stream` is true",
        ));
    }
    params.max_tokens = max_tokens.unwrap_or(limits.max_tokens);
    params.seed = match seed {
        Some(s) => s,
        // Sampling without a seed: a fresh one, recorded in the receipt so the answer can be
        // replayed.
        None if params.temperature > 0.0 => cocoon_runtime::sampling::fresh_seed(),
        None => 0,
    };
    params
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    job.params = params;
    Ok(job)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(k: &str, v: &Value) -> Result<String, ApiError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::field(k, format!("must be a string, got {}", kind(v))))
}

fn boolean(k: &str, v: &Value) -> Result<Option<bool>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(ApiError::field(
            k,
            format!("must be a boolean, got {}", kind(v)),
        )),
    }
}

fn integer(k: &str, v: &Value, min: u64, max: u64) -> Result<u64, ApiError> {
    let n = v.as_u64().filter(|n| (min..=max).contains(n));
    n.ok_or_else(|| match v.as_i64() {
        Some(i) => ApiError::field(k, format!("must be between {min} and {max}, got {i}")),
        None if v.is_u64() => ApiError::field(k, format!("must be between {min} and {max}")),
        None => ApiError::field(k, format!("must be an integer, got {}", shown_value(v))),
    })
}

fn number(k: &str, v: &Value, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let x = v
        .as_f64()
        .ok_or_else(|| ApiError::field(k, format!("must be a number, got {}", kind(v))))?;
    if !(min..=max).contains(&x) {
        return Err(ApiError::field(
            k,
            format!("must be between {min} and {max}, got {x}"),
        ));
    }
    Ok(Some(x))
}

fn shown_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => kind(v).to_owned(),
    }
}

fn messages(v: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::field("messages", "must be an array of messages"))?;
    if list.is_empty() {
        return Err(ApiError::field(
            "messages",
            "must hold at least one message",
        ));
    }
    if list.len() > MAX_MESSAGES {
        return Err(ApiError::field(
            "messages",
            format!("at most {MAX_MESSAGES} messages"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let at = |f: &str| format!("messages[{i}].{f}");
    let obj = m
        .as_object()
        .ok_or_else(|| ApiError::field(&format!("messages[{i}]"), "must be an object"))?;
    let mut role = None;
    let mut content = None;
    for (k, v) in obj {
        match k.as_str() {
            "role" => {
                let r = string(&at("role"), v)?;
                role = Some(match r.as_str() {
                    "system" | "user" | "assistant" => r,
                    // OpenAI's newer name for system instructions.
                    "developer" => "system".into(),
                    _ => {
                        return Err(ApiError::field(
                            &at("role"),
                            format!(
                                "must be system, user or assistant, got {}",
                                cocoon_runtime::escape::shown(&r)
                            ),
                        ))
                    }
                });
            }
            "content" => content = Some(content_text(&at("content"), v)?),
            "name" => {
                string(&at("name"), v)?;
            }
            other => {
                return Err(ApiError::field(
                    &at(&cocoon_runtime::escape::shown(other)),
                    "is not supported",
                ))
            }
        }
    }
    Ok(ChatMessage {
        role: role.ok_or_else(|| ApiError::field(&at("role"), "is required"))?,
        content: content.ok_or_else(|| ApiError::field(&at("content"), "is required"))?,
    })
}

/// A message's content: a string, or a list of `{"type": "text", "text": …}` parts joined.
fn content_text(name: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let t = p.get("type").and_then(Value::as_str);
                let body = p.get("text").and_then(Value::as_str);
                match (t, body, p.as_object().map(Map::len)) {
                    (Some("text"), Some(s), Some(2)) => text.push_str(s),
                    (Some("text"), _, _) => {
                        return Err(ApiError::field(
                            &format!("{name}[{j}]"),
                            "a text part is {\"type\": \"text\", \"text\": string}",
                        ))
                    }
                    _ => {
                        return Err(ApiError::field(
                            &format!("{name}[{j}].type"),
                            "only text parts are supported",
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::field(
            name,
            format!("must be a string or a list of text parts, got {}", kind(v)),
        )),
    }
}

fn prompt(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_owned())
        }
        _ => Err(ApiError::field(
            "prompt",
            "must be a string (or a list of one string); token lists and batches are not supported",
        )),
    }
}

fn stops(v: &Value) -> Result<Vec<String>, ApiError> {
    let list: Vec<&Value> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        _ => {
            return Err(ApiError::field(
                "stop",
                "must be a string or a list of strings",
            ))
        }
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::field(
            "stop",
            format!("at most {MAX_STOPS} sequences"),
        ));
    }
    list.into_iter()
        .map(|s| match s.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_STOP_BYTES => Ok(s.to_owned()),
            Some(_) => Err(ApiError::field(
                "stop",
                format!("each sequence must be 1 to {MAX_STOP_BYTES} bytes"),
            )),
            None => Err(ApiError::field(
                "stop",
                "must be a string or a list of strings",
            )),
        })
        .collect()
}

fn stream_options(v: &Value) -> Result<bool, ApiError> {
    let Some(obj) = v.as_object() else {
        return if v.is_null() {
            Ok(false)
        } else {
            Err(ApiError::field("stream_options", "must be an object"))
        };
    };
    let mut usage = false;
    for (k, v) in obj {
        match k.as_str() {
            "include_usage" => usage = boolean("stream_options.include_usage", v)?.unwrap_or(false),
            // Usage in every chunk (vLLM's extension) is not offered; off is the same answer.
            "continuous_usage_stats" if v.is_null() || *v == Value::Bool(false) => {}
            other => {
                return Err(ApiError::field(
                    &format!("stream_options.{}", cocoon_runtime::escape::shown(other)),
                    "is not supported",
                ))
            }
        }
    }
    Ok(usage)
}

fn chat_template_kwargs(v: &Value) -> Result<(), ApiError> {
    let Some(obj) = v.as_object() else {
        return if v.is_null() {
            Ok(())
        } else {
            Err(ApiError::field("chat_template_kwargs", "must be an object"))
        };
    };
    for (k, v) in obj {
        match k.as_str() {
            // LLaMA-family templates have no thinking switch: accepted and not passed on.
            "enable_thinking" => {
                boolean("chat_template_kwargs.enable_thinking", v)?;
            }
            other => {
                return Err(ApiError::field(
                    &format!(
                        "chat_template_kwargs.{}",
                        cocoon_runtime::escape::shown(other)
                    ),
                    "is not supported",
                ))
            }
        }
    }
    Ok(())
}

fn cocoon_options(v: &Value) -> Result<Option<String>, ApiError> {
    let Some(obj) = v.as_object() else {
        return if v.is_null() {
            Ok(None)
        } else {
            Err(ApiError::field("cocoon", "must be an object"))
        };
    };
    let mut nonce = None;
    for (k, v) in obj {
        match k.as_str() {
            "nonce" => {
                let n = string("cocoon.nonce", v)?;
                cocoon_runtime::notary::check_nonce(&n)
                    .map_err(|e| ApiError::field("cocoon.nonce", e))?;
                nonce = Some(n);
            }
            other => {
                return Err(ApiError::field(
                    &format!("cocoon.{}", cocoon_runtime::escape::shown(other)),
                    "unknown field",
                ))
            }
        }
    }
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_tokens: 512 };

    fn chat(body: &str) -> Result<Job, ApiError> {
        parse(Endpoint::Chat, body.as_bytes(), LIMITS)
    }

    fn message_of(e: ApiError) -> String {
        assert_eq!(e.status.as_u16(), 400, "{e}");
        e.message
    }

    #[test]
    fn a_plain_chat_request() {
        let j = chat(r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],"max_tokens":7,"seed":3,"temperature":0.5,"stop":"\n"}"#).unwrap();
        assert_eq!(j.params.max_tokens, 7);
        assert_eq!(j.params.seed, 3);
        assert_eq!(j.params.temperature, 0.5);
        assert_eq!(j.stop, vec!["\n".to_string()]);
        let Input::Messages(m) = &j.input else {
            panic!("not messages")
        };
        assert_eq!(m[1].content, "hi there");
        assert_eq!(
            j.input.receipt_text(),
            r#"[{"content":"be brief","role":"system"},{"content":"hi there","role":"user"}]"#
        );
    }

    #[test]
    fn one_user_message_hashes_like_cocoon_run() {
        let j = chat(r#"{"model":"m","messages":[{"role":"user","content":"What?"}]}"#).unwrap();
        assert_eq!(j.input.receipt_text(), "What?");
        assert_eq!(j.params.max_tokens, 512);
        assert_eq!(j.params.seed, 0);
    }

    #[test]
    fn what_a_cocoon_worker_forwards_is_accepted() {
        let j = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":30,"max_completion_tokens":20,
            "stream":true,"stream_options":{"include_usage":true},"skip_special_tokens":false,
            "chat_template_kwargs":{"enable_thinking":false},"reasoning_effort":"low","verbosity":"low","prompt_cache_key":"k",
            "prompt_cache_retention":"24h","service_tier":"auto","store":false,"safety_identifier":"s","user":"u",
            "presence_penalty":0,"frequency_penalty":0.0,"logprobs":false,"response_format":{"type":"text"},
            "is_encrypted":true,"sender_public_key":"aa","receiver_public_key":"bb","encryption_nonce":"cc","n":1}"#)
        .unwrap();
        assert_eq!(j.params.max_tokens, 20);
        assert!(j.stream && j.include_usage);
    }

    #[test]
    fn answer_changing_fields_are_refused_by_name() {
        for (body, name) in [
            (r#""n":2"#, "`n`"),
            (r#""logprobs":true"#, "`logprobs`"),
            (r#""tools":[{"type":"function"}]"#, "`tools`"),
            (r#""presence_penalty":0.5"#, "`presence_penalty`"),
            (
                r#""response_format":{"type":"json_object"}"#,
                "`response_format`",
            ),
            (r#""frobnicate":1"#, "`frobnicate`"),
            (r#""max_tokens":-1"#, "`max_tokens`"),
            (r#""max_tokens":100000000000"#, "`max_tokens`"),
            (r#""max_tokens":513"#, "`max_tokens`"),
            (r#""max_tokens":"5""#, "`max_tokens`"),
            (r#""temperature":3"#, "`temperature`"),
            (r#""seed":-4"#, "`seed`"),
            (r#""stop":[1]"#, "`stop`"),
            (r#""cocoon":{"nonce":"xyz"}"#, "`cocoon.nonce`"),
        ] {
            let text =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{body}}}"#);
            let m = message_of(chat(&text).unwrap_err());
            assert!(m.contains(name), "{body}: {m}");
        }
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            r#"{"model":"m","messages":"hi"}"#,
            r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
        ] {
            message_of(chat(body).unwrap_err());
        }
    }

    #[test]
    fn completions_take_a_raw_prompt() {
        let j = parse(
            Endpoint::Completions,
            br#"{"model":"m","prompt":["Once"],"max_tokens":3}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!(j.input, Input::Raw("Once".into()));
        assert!(!j.input.chat_template());
        // `messages` belongs to the chat endpoint.
        let e = parse(
            Endpoint::Completions,
            br#"{"model":"m","messages":[]}"#,
            LIMITS,
        )
        .unwrap_err();
        assert!(message_of(e).contains("`messages`"));
    }

    #[test]
    fn sampling_without_a_seed_gets_a_recorded_one() {
        let j = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1}"#)
            .unwrap();
        assert!(j.params.seed <= MAX_SEED);
    }
}
