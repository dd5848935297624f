//! `cocoon import-gguf`: a LLaMA GGUF file becomes a Hugging Face model directory.
//!
//! Weights are dequantized and stored in the chosen dtype; `attn_q`/`attn_k` rows are put back
//! in Hugging Face order (llama.cpp's converter interleaves the two RoPE halves of each head);
//! `config.json`, `tokenizer.json` (byte-level BPE: vocabulary, merges, pre-tokenizer and
//! special tokens), `tokenizer_config.json` (chat template) and `generation_config.json` are
//! rebuilt from the metadata. The directory's manifest is written as `cocoon.sha256`.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::{json, Value};

use super::dequant::dequantize;
use super::{err, GgufFile, GgufTensor, MetaValue};
use crate::error::{Error, Result};
use crate::model::weights::DType;
use crate::pin::{Pin, MANIFEST_FILE};
use crate::pinned::manifest_of;

/// Converts the GGUF `bytes` into a model directory at `out` and returns its pin.
pub fn import_gguf(bytes: &[u8], out: &Path, dtype: DType) -> Result<Pin> {
    let gguf = GgufFile::parse(bytes)?;
    let arch = gguf.meta_str("general.architecture")?;
    if arch != "llama" {
        return Err(err(format!(
            "unsupported architecture {arch:?} (supported: llama)"
        )));
    }
    let hp = HyperParams::read(&gguf)?;
    let tensors = convert_tensors(&gguf, &hp, dtype)?;
    let tied = !tensors.contains_key("lm_head.weight");
    let tokenizer = Tokenizer::read(&gguf)?;

    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_owned(),
        error: source,
    })?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            path,
            error: source,
        })
    };
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    write(
        "config.json",
        &pretty(&hp.config_json(tied, &tokenizer, dtype)),
    )?;
    write(
        "tokenizer.json",
        &serde_json::to_vec(&tokenizer.tokenizer_json()?).unwrap_or_default(),
    )?;
    write(
        "tokenizer_config.json",
        &pretty(&tokenizer.tokenizer_config_json(hp.context)),
    )?;
    write(
        "generation_config.json",
        &pretty(&tokenizer.generation_config_json()),
    )?;
    let st = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| err(format!("writing safetensors: {e}")))?;
    write("model.safetensors", &st)?;

    let manifest = manifest_of(out, None)?;
    write(MANIFEST_FILE, manifest.text().as_bytes())?;
    Ok(manifest.pin())
}

struct HyperParams {
    hidden: u64,
    ffn: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    context: u64,
    eps: f64,
    rope_theta: f64,
}

impl HyperParams {
    fn read(g: &GgufFile<'_>) -> Result<Self> {
        let hidden = g.meta_u64("llama.embedding_length")?;
        let heads = g.meta_u64("llama.attention.head_count")?;
        let kv_heads = match g.metadata.get("llama.attention.head_count_kv") {
            Some(_) => g.meta_u64("llama.attention.head_count_kv")?,
            None => heads,
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(err(format!(
                "head counts {heads}/{kv_heads} are not a GQA layout"
            )));
        }
        let head_dim = match g.metadata.get("llama.attention.key_length") {
            Some(_) => g.meta_u64("llama.attention.key_length")?,
            None => hidden / heads,
        };
        if let Some(rot) = g.metadata.get("llama.rope.dimension_count") {
            if rot.as_u64() != Some(head_dim) {
                return Err(err(format!(
                    "partial rotary embedding ({rot:?} of {head_dim}) is not supported"
                )));
            }
        }
        if g.metadata.contains_key("llama.rope.scaling.type")
            || g.tensors.iter().any(|t| t.name == "rope_freqs.weight")
        {
            return Err(err("RoPE scaling in GGUF (rope_freqs / llama.rope.scaling.*) is not supported by the importer"));
        }
        let float = |key: &str, default: f64| match g.metadata.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| err(format!("metadata {key} is not a finite positive number"))),
        };
        Ok(HyperParams {
            hidden,
            ffn: g.meta_u64("llama.feed_forward_length")?,
            layers: g.meta_u64("llama.block_count")?,
            heads,
            kv_heads,
            head_dim,
            context: g.meta_u64("llama.context_length")?,
            eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_theta: float("llama.rope.freq_base", 10_000.0)?,
        })
    }

    fn config_json(&self, tied: bool, tok: &Tokenizer, dtype: DType) -> Value {
        let mut c = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": tok.tokens.len(),
            "max_position_embeddings": self.context,
            "rms_norm_eps": f32_json(self.eps),
            "rope_theta": f32_json(self.rope_theta),
            "rope_scaling": null,
            "tie_word_embeddings": tied,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": match dtype { DType::BF16 => "bfloat16", DType::F16 => "float16", DType::F32 => "float32" },
        });
        if let Some(b) = tok.bos {
            c["bos_token_id"] = b.into();
        }
        if let Some(e) = tok.eos {
            c["eos_token_id"] = e.into();
        }
        c
    }
}

/// A float read as f32 from GGUF, written with the shortest decimal that round-trips as f32.
fn f32_json(x: f64) -> Value {
    let s = format!("{}", x as f32);
    s.parse::<f64>().map(Value::from).unwrap_or(Value::from(x))
}

/// Hugging Face name of a GGUF tensor, and for Q/K the head count to un-permute with.
fn hf_name(name: &str, hp: &HyperParams) -> Option<(String, Option<u64>)> {
    match name {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    // Only the canonical spelling: `blk.00` or `blk.+0` would name layer 0 a second time.
    let layer: u64 = layer
        .parse()
        .ok()
        .filter(|l: &u64| l.to_string() == layer)?;
    let (hf, heads) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(hp.heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(hp.kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), heads))
}

/// Undoes llama.cpp's Q/K row permutation: within each head of `dim` rows, GGUF row `2j + i`
/// holds Hugging Face row `i · dim/2 + j` (i ∈ {0, 1}).
fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(err(format!(
            "cannot un-permute {rows} rows into {heads} heads"
        )));
    }
    let dim = rows / heads;
    let half = dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let hf = h * dim + i * half + j;
                let gg = h * dim + 2 * j + i;
                out[hf * cols..(hf + 1) * cols]
                    .copy_from_slice(&values[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// A converted tensor ready for safetensors.
struct Converted {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Converted {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn convert_tensors(
    g: &GgufFile<'_>,
    hp: &HyperParams,
    dtype: DType,
) -> Result<BTreeMap<String, Converted>> {
    let named = g
        .tensors
        .iter()
        .map(|t| {
            hf_name(&t.name, hp)
                .map(|n| (n, t))
                .ok_or_else(|| err(format!("unexpected tensor {} for a llama model", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut seen = BTreeMap::new();
    for ((name, _), t) in &named {
        if let Some(other) = seen.insert(name.clone(), &t.name) {
            return Err(err(format!(
                "tensors {other} and {} are both {name}",
                t.name
            )));
        }
    }
    named
        .into_par_iter()
        .map(|((name, heads), t)| Ok((name, convert(g, t, heads, dtype)?)))
        .collect()
}

fn convert(
    g: &GgufFile<'_>,
    t: &GgufTensor,
    heads: Option<u64>,
    dtype: DType,
) -> Result<Converted> {
    let n =
        usize::try_from(t.elements()).map_err(|_| err(format!("tensor {} too large", t.name)))?;
    let mut values = vec![0f32; n];
    dequantize(t.ty, g.data(t), &mut values);
    let shape: Vec<usize> = t.dims.iter().rev().map(|d| *d as usize).collect();
    if let Some(heads) = heads {
        let (rows, cols) = (shape[0], shape.get(1).copied().unwrap_or(1));
        values = unpermute_rows(&values, rows, cols, heads as usize)?;
    }
    let (st, data) = match dtype {
        DType::F32 => (
            safetensors::Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        DType::BF16 => (
            safetensors::Dtype::BF16,
            values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            safetensors::Dtype::F16,
            values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    };
    Ok(Converted {
        dtype: st,
        shape,
        data,
    })
}

/// The tokenizer as GGUF describes it.
struct Tokenizer {
    tokens: Vec<String>,
    types: Vec<i64>,
    merges: Vec<String>,
    pre: String,
    bos: Option<u64>,
    eos: Option<u64>,
    unk: Option<u64>,
    pad: Option<u64>,
    add_bos: bool,
    chat_template: Option<String>,
}

/// GGUF token types.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

impl Tokenizer {
    fn read(g: &GgufFile<'_>) -> Result<Self> {
        let model = g.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "unsupported tokenizer model {model:?} (supported: gpt2, byte-level BPE)"
            )));
        }
        let tokens: Vec<String> = g
            .meta_strings("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let types = match g.metadata.get("tokenizer.ggml.token_type") {
            Some(MetaValue::Array(a)) => a
                .iter()
                .map(|v| match v {
                    MetaValue::I64(x) => Ok(*x),
                    MetaValue::U64(x) => Ok(*x as i64),
                    _ => Err(err("tokenizer.ggml.token_type holds a non-integer")),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(err("tokenizer.ggml.token_type is not an array")),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(err("tokenizer.ggml.token_type and tokens differ in length"));
        }
        let id = |key: &str| -> Result<Option<u64>> {
            match g.metadata.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < tokens.len() => Ok(Some(i)),
                    _ => Err(err(format!("metadata {key} is not a token id"))),
                },
            }
        };
        Ok(Tokenizer {
            merges: g
                .meta_strings("tokenizer.ggml.merges")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            pre: g
                .metadata
                .get("tokenizer.ggml.pre")
                .and_then(MetaValue::as_str)
                .unwrap_or("default")
                .to_owned(),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: matches!(
                g.metadata.get("tokenizer.ggml.add_bos_token"),
                Some(MetaValue::Bool(true))
            ),
            chat_template: g
                .metadata
                .get("tokenizer.chat_template")
                .and_then(MetaValue::as_str)
                .map(str::to_owned),
            tokens,
            types,
        })
    }

    fn name(&self, id: Option<u64>) -> Value {
        id.map_or(Value::Null, |i| {
            Value::from(self.tokens[i as usize].clone())
        })
    }

    fn pre_tokenizer(&self) -> Result<Value> {
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        Ok(match self.pre.as_str() {
            "default" | "gpt2" | "gpt-2" => byte_level(true),
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                byte_level(false)]}),
            other => {
                return Err(err(format!(
                "unsupported pre-tokenizer {other:?} (supported: default, gpt2, smollm, llama-bpe)"
            )))
            }
        })
    }

    fn tokenizer_json(&self) -> Result<Value> {
        let vocab: serde_json::Map<String, Value> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Value::from(i)))
            .collect();
        let added: Vec<Value> = self
            .types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TOKEN_CONTROL || **t == TOKEN_USER_DEFINED)
            .map(|(i, t)| {
                let special = *t == TOKEN_CONTROL;
                json!({"id": i, "content": self.tokens[i], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": !special, "special": special})
            })
            .collect();
        let post = match (self.add_bos, self.bos) {
            (true, Some(bos)) => {
                let b = &self.tokens[bos as usize];
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {b: {"id": b, "ids": [bos], "tokens": [b]}}})
            }
            _ => {
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
            }
        };
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": self.pre_tokenizer()?,
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": self.name(self.unk),
                "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": self.merges}
        }))
    }

    fn tokenizer_config_json(&self, context: u64) -> Value {
        json!({
            "add_bos_token": self.add_bos,
            "bos_token": self.name(self.bos),
            "eos_token": self.name(self.eos),
            "unk_token": self.name(self.unk),
            "pad_token": self.name(self.pad),
            "chat_template": self.chat_template,
            "model_max_length": context,
            "clean_up_tokenization_spaces": false,
        })
    }

    fn generation_config_json(&self) -> Value {
        json!({"bos_token_id": self.bos, "eos_token_id": self.eos, "pad_token_id": self.pad})
    }
}

/// LLaMA 3's pre-tokenizer split pattern.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // Two heads of dim 4, one column: HF rows [0..8]; llama.cpp stores per head rows
        // in order (0, 2, 1, 3): interleaving the two halves.
        let gguf = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(
            unpermute_rows(&gguf, 8, 1, 2).unwrap(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        assert!(unpermute_rows(&gguf, 8, 1, 3).is_err());
    }

    #[test]
    fn layer_numbers_have_one_spelling() {
        let hp = HyperParams {
            hidden: 8,
            ffn: 16,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            context: 16,
            eps: 1e-5,
            rope_theta: 1e4,
        };
        assert!(hf_name("blk.0.attn_norm.weight", &hp).is_some());
        assert!(hf_name("blk.10.attn_norm.weight", &hp).is_some());
        assert!(hf_name("blk.00.attn_norm.weight", &hp).is_none());
        assert!(hf_name("blk.+0.attn_norm.weight", &hp).is_none());
    }
}
