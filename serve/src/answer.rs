//! Answers as OpenAI's API shapes them, whole or as stream chunks, with `usage` and the
//! receipt in the top-level `cocoon` object (docs/design.md §11, §11a).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::request::Endpoint;

/// Token counts as the client is billed: exact, and equal to the receipt's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (the receipt's `input.tokens`).
    pub prompt: u64,
    /// Generated tokens, the EOS token included (the receipt's `output.tokens`).
    pub completion: u64,
}

impl Usage {
    /// OpenAI's `usage` object with the detail fields a COCOON worker bills from. No prompt
    /// cache and no reasoning tokens here: both details are 0.
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        })
    }
}

/// A finished answer, as sent (and as an idempotent retry gets it again).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The endpoint it answers.
    pub endpoint: Endpoint,
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: String,
    /// The answer's text.
    pub text: String,
    /// `stop` or `length`.
    pub finish: &'static str,
    /// Token counts.
    pub usage: Usage,
    /// The receipt (JSON).
    pub receipt: Value,
}

impl Answer {
    /// Roughly the memory it holds, bytes.
    pub fn size(&self) -> usize {
        self.text.len() + self.receipt.to_string().len() + self.id.len() + self.model.len() + 64
    }

    /// The whole answer as one object.
    pub fn json(&self) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": self.text},
                "finish_reason": self.finish,
                "logprobs": null,
            }),
            Endpoint::Completions => json!({
                "index": 0,
                "text": self.text,
                "finish_reason": self.finish,
                "logprobs": null,
            }),
        };
        json!({
            "id": self.id,
            "object": object(self.endpoint, false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage.json(),
            "cocoon": {"receipt": self.receipt},
        })
    }
}

fn object(endpoint: Endpoint, chunk: bool) -> &'static str {
    match (endpoint, chunk) {
        (Endpoint::Chat, false) => "chat.completion",
        (Endpoint::Chat, true) => "chat.completion.chunk",
        (Endpoint::Completions, _) => "text_completion",
    }
}

/// How a stream is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// Server-sent events: `data: {chunk}` lines, then `data: [DONE]`.
    Sse,
    /// One bare JSON object a line, no `[DONE]`; the last object carries `usage` and `cocoon`
    /// (what a COCOON worker's relay parses).
    Ndjson,
}

impl StreamFormat {
    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Sse => "text/event-stream",
            StreamFormat::Ndjson => "application/x-ndjson",
        }
    }

    /// One object, framed.
    pub fn frame(self, v: &Value) -> Bytes {
        match self {
            StreamFormat::Sse => Bytes::from(format!("data: {v}\n\n")),
            StreamFormat::Ndjson => Bytes::from(format!("{v}\n")),
        }
    }

    /// What ends the stream.
    pub fn end(self) -> Option<Bytes> {
        match self {
            StreamFormat::Sse => Some(Bytes::from_static(b"data: [DONE]\n\n")),
            StreamFormat::Ndjson => None,
        }
    }
}

/// The chunks of one streamed answer.
#[derive(Clone, Debug)]
pub struct Chunks {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The answer's id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model name.
    pub model: String,
}

impl Chunks {
    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object(self.endpoint, true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first chunk of a chat stream: the assistant's role (none for completions).
    pub fn start(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                "finish_reason": null, "logprobs": null}]),
            )
        })
    }

    /// A piece of text.
    pub fn piece(&self, text: &str) -> Value {
        self.chunk(match self.endpoint {
            Endpoint::Chat => json!([{"index": 0, "delta": {"content": text},
                "finish_reason": null, "logprobs": null}]),
            Endpoint::Completions => json!([{"index": 0, "text": text,
                "finish_reason": null, "logprobs": null}]),
        })
    }

    /// The last objects: the finish reason, then `usage` when asked (OpenAI sends it in a
    /// chunk of its own with no choices), the receipt in the last of them. NDJSON puts
    /// everything in one final object, `usage` always.
    pub fn end(
        &self,
        finish: &str,
        usage: &Usage,
        receipt: &Value,
        include_usage: bool,
        format: StreamFormat,
    ) -> Vec<Value> {
        let mut finish_chunk = self.chunk(match self.endpoint {
            Endpoint::Chat => {
                json!([{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": null}])
            }
            Endpoint::Completions => {
                json!([{"index": 0, "text": "", "finish_reason": finish, "logprobs": null}])
            }
        });
        let cocoon = json!({"receipt": receipt});
        match format {
            StreamFormat::Ndjson => {
                finish_chunk["usage"] = usage.json();
                finish_chunk["cocoon"] = cocoon;
                vec![finish_chunk]
            }
            StreamFormat::Sse if include_usage => {
                let mut u = self.chunk(json!([]));
                u["usage"] = usage.json();
                u["cocoon"] = cocoon;
                vec![finish_chunk, u]
            }
            StreamFormat::Sse => {
                finish_chunk["cocoon"] = cocoon;
                vec![finish_chunk]
            }
        }
    }

    /// The whole stream of an answer given before (an idempotent retry): the text in one
    /// piece.
    pub fn replay(&self, a: &Answer, include_usage: bool, format: StreamFormat) -> Vec<Value> {
        let mut out: Vec<Value> = self.start().into_iter().collect();
        if !a.text.is_empty() {
            out.push(self.piece(&a.text));
        }
        out.extend(self.end(a.finish, &a.usage, &a.receipt, include_usage, format));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn answer(text: &str) -> Answer {
        Answer {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            text: text.into(),
            finish: "stop",
            usage: Usage {
                prompt: 5,
                completion: 3,
            },
            receipt: json!({"version": 1}),
        }
    }

    #[test]
    fn a_whole_answer_has_usage_details_and_the_receipt() {
        let v = answer("hi").json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["usage"]["total_tokens"], 8);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            0
        );
        assert_eq!(v["cocoon"]["receipt"]["version"], 1);
    }

    #[test]
    fn stream_endings_by_format() {
        let a = answer("hi");
        let c = Chunks {
            endpoint: Endpoint::Chat,
            id: a.id.clone(),
            created: 1,
            model: "m".into(),
        };
        let sse = c.replay(&a, true, StreamFormat::Sse);
        assert_eq!(sse.len(), 4);
        assert_eq!(sse[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(sse[1]["choices"][0]["delta"]["content"], "hi");
        assert_eq!(sse[2]["choices"][0]["finish_reason"], "stop");
        assert!(sse[2].get("cocoon").is_none());
        assert_eq!(sse[3]["choices"], json!([]));
        assert_eq!(sse[3]["usage"]["completion_tokens"], 3);
        assert_eq!(sse[3]["cocoon"]["receipt"]["version"], 1);
        let no_usage = c.replay(&a, false, StreamFormat::Sse);
        assert!(no_usage.last().unwrap().get("usage").is_none());
        assert!(no_usage.last().unwrap().get("cocoon").is_some());
        let nd = c.replay(&a, false, StreamFormat::Ndjson);
        let last = nd.last().unwrap();
        assert_eq!(last["usage"]["prompt_tokens"], 5);
        assert_eq!(last["cocoon"]["receipt"]["version"], 1);
        assert_eq!(StreamFormat::Ndjson.frame(last).last(), Some(&b'\n'));
        assert!(StreamFormat::Ndjson.end().is_none());
    }
}
