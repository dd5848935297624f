//! `config.json` of a LLaMA-family model: the fields we honour, and a refusal for the ones we
//! cannot.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::pinned::CONFIG;

/// Architectures this runtime runs (`model_type`).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral"];

/// RoPE frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// LLaMA 3.1 scaling (`rope_type: "llama3"`).
    Llama3 {
        /// Overall factor.
        factor: f32,
        /// Wavelengths above `original_max / low_freq_factor` are divided by `factor`.
        low_freq_factor: f32,
        /// Wavelengths below `original_max / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// Context length the model was trained at.
        original_max_position_embeddings: f32,
    },
}

/// The hyper-parameters of a LLaMA-family transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `model_type` as written in the config.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens.
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Parses and validates `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| err("not a JSON object".into()))?;
        Self::from_map(obj)
    }

    fn from_map(obj: &Map<String, Value>) -> Result<Self> {
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| err("missing `model_type`".into()))?;
        if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
            return Err(err(format!(
                "unsupported model_type {model_type:?} (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        refuse_unhonoured(obj)?;
        let hidden_size = usize_field(obj, "hidden_size")?;
        let num_attention_heads = usize_field(obj, "num_attention_heads")?;
        let num_key_value_heads = match obj.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            Some(_) => usize_field(obj, "num_key_value_heads")?,
        };
        let head_dim = match obj.get("head_dim") {
            None | Some(Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(err(format!(
                        "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                    )));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => usize_field(obj, "head_dim")?,
        };
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(err(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim {head_dim} is odd; RoPE needs pairs")));
        }
        let config = LlamaConfig {
            model_type: model_type.to_owned(),
            hidden_size,
            intermediate_size: usize_field(obj, "intermediate_size")?,
            num_hidden_layers: usize_field(obj, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: usize_field(obj, "vocab_size")?,
            max_position_embeddings: usize_field(obj, "max_position_embeddings")?,
            rms_norm_eps: f32_field(obj, "rms_norm_eps", Some(1e-6))?,
            rope_theta: rope_theta(obj)?,
            rope_scaling: rope_scaling(
                obj.get("rope_parameters")
                    .or_else(|| obj.get("rope_scaling")),
            )?,
            tie_word_embeddings: match obj.get("tie_word_embeddings") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(err(format!("`tie_word_embeddings` is not a boolean: {v}"))),
            },
            bos_token_id: token_ids(obj.get("bos_token_id"), "bos_token_id")?
                .first()
                .copied(),
            eos_token_ids: token_ids(obj.get("eos_token_id"), "eos_token_id")?,
        };
        // Far above any real model, low enough that nothing sized by them (tensor lists, KV
        // pools, buffers) can exhaust memory before the weights are found missing.
        for (key, value, max) in [
            ("num_hidden_layers", config.num_hidden_layers, 1024),
            ("hidden_size", config.hidden_size, 1 << 17),
            ("intermediate_size", config.intermediate_size, 1 << 20),
            ("num_attention_heads", config.num_attention_heads, 1024),
            ("head_dim", config.head_dim, 1024),
            ("vocab_size", config.vocab_size, 1 << 24),
        ] {
            if value > max {
                return Err(err(format!("`{key}` {value} is above the supported {max}")));
            }
        }
        if !(config.rms_norm_eps.is_finite() && config.rms_norm_eps > 0.0) {
            return Err(err(format!(
                "`rms_norm_eps` {} is not a finite positive number",
                config.rms_norm_eps
            )));
        }
        if config.sliding_window_limits(obj)? {
            return Err(err(
                "`sliding_window` shorter than the context is not supported".into(),
            ));
        }
        Ok(config)
    }

    fn sliding_window_limits(&self, obj: &Map<String, Value>) -> Result<bool> {
        Ok(match obj.get("sliding_window") {
            None | Some(Value::Null) => false,
            Some(_) => usize_field(obj, "sliding_window")? < self.max_position_embeddings,
        })
    }

    /// Parameters counted from the shapes (embedding, blocks, final norm, untied head).
    pub fn parameter_count(&self) -> u64 {
        let (h, i, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let block = 2 * h + h * q + 2 * h * kv + q * h + 3 * h * i;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * block + h + head
    }
}

fn err(message: String) -> Error {
    Error::format(CONFIG, message)
}

/// Fields read by [`LlamaConfig::from_map`] or checked by [`refuse_unhonoured`].
const HONOURED: &[&str] = &[
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "sliding_window",
    "hidden_act",
    "hidden_activation",
    "attention_bias",
    "mlp_bias",
    "quantization_config",
    "pretraining_tp",
];

/// Fields that do not change inference: bookkeeping, training-only settings, other tokens.
const IRRELEVANT: &[&str] = &[
    "architectures",
    "attention_dropout",
    "initializer_range",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "use_cache",
    "_name_or_path",
    "name_or_path",
    "id2label",
    "label2id",
    "tie_encoder_decoder",
    "is_decoder",
    "is_encoder_decoder",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
    "torchscript",
    "chunk_size_feed_forward",
    "problem_type",
    "tokenizer_class",
    "task_specific_params",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "finetuning_task",
    "prefix",
    "sep_token_id",
    "decoder_start_token_id",
    "max_length",
    "unk_token_id",
    "use_sliding_window",
    "max_window_layers",
    "rope_interleaved",
    "residual_dropout",
    "embd_pdrop",
];

/// Fields whose presence changes the computation in ways this runtime does not implement,
/// and fields it does not know at all: both refused, so nothing is silently ignored.
fn refuse_unhonoured(obj: &Map<String, Value>) -> Result<()> {
    if let Some(unknown) = obj
        .keys()
        .find(|k| !HONOURED.contains(&k.as_str()) && !IRRELEVANT.contains(&k.as_str()))
    {
        return Err(err(format!(
            "unknown field `{unknown}`: this runtime cannot tell whether it changes the model"
        )));
    }
    match obj.get("pretraining_tp") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => {} // a slicing of the same products in HF: same math
        Some(v) => return Err(err(format!("`pretraining_tp` is not an integer: {v}"))),
    }
    if let Some(Value::Bool(true)) = obj.get("use_sliding_window") {
        return Err(err("`use_sliding_window: true` is not supported".into()));
    }
    if let Some(act) = obj
        .get("hidden_act")
        .or_else(|| obj.get("hidden_activation"))
    {
        if act.as_str() != Some("silu") {
            return Err(err(format!("unsupported hidden_act {act} (only \"silu\")")));
        }
    }
    for flag in ["attention_bias", "mlp_bias"] {
        match obj.get(flag) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(v) => return Err(err(format!("`{flag}: {v}` is not supported"))),
        }
    }
    if let Some(q) = obj.get("quantization_config") {
        if !q.is_null() {
            return Err(err(
                "quantized checkpoints (`quantization_config`) are not supported".into(),
            ));
        }
    }
    Ok(())
}

fn usize_field(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    let v = obj
        .get(key)
        .ok_or_else(|| err(format!("missing `{key}`")))?;
    v.as_u64()
        .filter(|n| *n > 0 && *n <= (1 << 31))
        .map(|n| n as usize)
        .ok_or_else(|| {
            err(format!(
                "`{key}` must be a positive integer below 2^31, found {v}"
            ))
        })
}

fn f32_field(obj: &Map<String, Value>, key: &str, default: Option<f32>) -> Result<f32> {
    match obj.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| err(format!("missing `{key}`"))),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .map(|x| x as f32)
            .ok_or_else(|| err(format!("`{key}` must be a positive number, found {v}"))),
    }
}

fn token_ids(v: Option<&Value>, key: &str) -> Result<Vec<u32>> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| err(format!("`{key}` must be token ids, found {v}")))
    };
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// `rope_theta` at the top level, or inside `rope_parameters` (transformers 5).
fn rope_theta(obj: &Map<String, Value>) -> Result<f32> {
    let nested = obj
        .get("rope_parameters")
        .and_then(Value::as_object)
        .filter(|p| p.contains_key("rope_theta"));
    match (nested, obj.get("rope_theta")) {
        (Some(p), top) => {
            let theta = f32_field(p, "rope_theta", None)?;
            if top.is_some_and(|t| !t.is_null()) && f32_field(obj, "rope_theta", None)? != theta {
                return Err(err(
                    "`rope_theta` and `rope_parameters.rope_theta` disagree".into(),
                ));
            }
            Ok(theta)
        }
        (None, _) => f32_field(obj, "rope_theta", Some(10_000.0)),
    }
}

fn rope_scaling(v: Option<&Value>) -> Result<RopeScaling> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(RopeScaling::None),
        Some(Value::Object(o)) => o,
        Some(v) => return Err(err(format!("`rope_scaling` is not an object: {v}"))),
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind {
        "default" | "" if !obj.contains_key("factor") => Ok(RopeScaling::None),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: f32_field(obj, "factor", None)?,
            low_freq_factor: f32_field(obj, "low_freq_factor", None)?,
            high_freq_factor: f32_field(obj, "high_freq_factor", None)?,
            original_max_position_embeddings: f32_field(
                obj,
                "original_max_position_embeddings",
                None,
            )?,
        }),
        other => Err(err(format!(
            "unsupported rope_scaling type {other:?} (supported: \"llama3\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": true, "eos_token_id": [2, 3],
            "bos_token_id": 1, "hidden_act": "silu", "torch_dtype": "bfloat16"
        })
    }

    fn parse(v: &Value) -> Result<LlamaConfig> {
        LlamaConfig::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn parses_a_gqa_config() {
        let c = parse(&base()).unwrap();
        assert_eq!(
            (c.head_dim, c.num_key_value_heads, c.eos_token_ids.clone()),
            (16, 2, vec![2, 3])
        );
        assert_eq!(c.bos_token_id, Some(1));
        // 100*64 embed + 2 * (2*64 + 64*64 + 2*64*32 + 64*64 + 3*64*128) + 64
        assert_eq!(
            c.parameter_count(),
            6400 + 2 * (128 + 4096 + 4096 + 4096 + 24576) + 64
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let cases: &[(&str, Value)] = &[
            ("model_type", serde_json::json!("gpt2")),
            ("hidden_act", serde_json::json!("gelu")),
            ("attention_bias", serde_json::json!(true)),
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            ),
            ("num_key_value_heads", serde_json::json!(3)),
            ("hidden_size", serde_json::json!(-1)),
            ("vocab_size", serde_json::json!("100")),
            ("sliding_window", serde_json::json!(16)),
        ];
        for (key, value) in cases {
            let mut v = base();
            v[*key] = value.clone();
            let e = parse(&v).unwrap_err().to_string();
            assert!(e.starts_with("config.json: "), "{key}: {e}");
        }
        let mut v = base();
        v.as_object_mut().unwrap().remove("num_hidden_layers");
        assert!(parse(&v)
            .unwrap_err()
            .to_string()
            .contains("num_hidden_layers"));
    }

    #[test]
    fn parses_llama3_rope_scaling() {
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        assert!(
            matches!(parse(&v).unwrap().rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0)
        );
    }

    #[test]
    fn sizes_beyond_any_model_are_refused_before_anything_is_sized_by_them() {
        for (key, value) in [
            ("num_hidden_layers", serde_json::json!(1u64 << 31)),
            ("vocab_size", serde_json::json!(1u64 << 30)),
            ("hidden_size", serde_json::json!(1u64 << 20)),
        ] {
            let mut v = base();
            v[key] = value;
            let e = LlamaConfig::from_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
