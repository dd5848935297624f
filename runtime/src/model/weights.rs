//! Safetensors headers of a pinned model: where each tensor lies, with which dtype and shape,
//! checked against the configuration before any weight is used.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::pinned::{PinnedModel, WEIGHTS, WEIGHTS_INDEX};

/// Element types of stored weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }

    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            DType::BF16 => "BF16",
            DType::F16 => "F16",
            DType::F32 => "F32",
        }
    }
}

/// One tensor's place in a pinned file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// File holding it, relative to the model directory.
    pub file: String,
    /// Stored element type.
    pub dtype: DType,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Byte range inside the file.
    pub range: std::ops::Range<usize>,
}

impl TensorEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every tensor of a model, by name.
#[derive(Clone, Debug, Default)]
pub struct WeightIndex {
    tensors: BTreeMap<String, TensorEntry>,
}

/// Tensors that checkpoints carry but that hold nothing the forward pass needs.
fn is_ignorable(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

impl WeightIndex {
    /// Parses and validates every safetensors header of the model.
    pub fn parse(model: &PinnedModel) -> Result<Self> {
        let mut index = WeightIndex::default();
        match model.file(WEIGHTS_INDEX) {
            None => index.add_file(WEIGHTS, model.required(WEIGHTS)?)?,
            Some(json) => {
                let map = weight_map(json)?;
                let mut shards: Vec<&str> = map.values().map(String::as_str).collect();
                shards.sort_unstable();
                shards.dedup();
                for shard in shards {
                    index.add_file(shard, model.required(shard)?)?;
                }
                for (name, shard) in &map {
                    match index.tensors.get(name) {
                        Some(t) if t.file == *shard => {}
                        Some(t) => {
                            return Err(Error::format(
                                WEIGHTS_INDEX,
                                format!(
                                    "lists {} in {}, but it is in {}",
                                    crate::escape::shown(name),
                                    crate::escape::shown(shard),
                                    crate::escape::shown(&t.file)
                                ),
                            ))
                        }
                        None => {
                            return Err(Error::format(
                                shard.clone(),
                                format!(
                                    "tensor {} listed in {WEIGHTS_INDEX} is absent",
                                    crate::escape::shown(name)
                                ),
                            ))
                        }
                    }
                }
            }
        }
        Ok(index)
    }

    fn add_file(&mut self, file: &str, bytes: &[u8]) -> Result<()> {
        let bad = |m: String| Error::format(file, m);
        // serde keeps the last of two equal keys: one file could then mean two models to two
        // loaders. The header's keys are checked first.
        let header = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
            .ok_or_else(|| bad("invalid safetensors: the header length is past the file".into()))?;
        if let Some(dup) = duplicate_key(header) {
            return Err(bad(format!(
                "the header names {} twice",
                crate::escape::shown(&dup)
            )));
        }
        let parsed = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("invalid safetensors: {e}")))?;
        let (header_len, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("invalid safetensors: {e}")))?;
        let data_start = 8 + header_len;
        for name in parsed.names() {
            let info = metadata.info(name).ok_or_else(|| {
                bad(format!(
                    "tensor {} has no header entry",
                    crate::escape::shown(name)
                ))
            })?;
            let dtype = match info.dtype {
                Dtype::BF16 => DType::BF16,
                Dtype::F16 => DType::F16,
                Dtype::F32 => DType::F32,
                _ if is_ignorable(name) => continue,
                other => {
                    return Err(bad(format!(
                        "tensor {}: unsupported dtype {other:?} (supported: BF16, F16, F32)",
                        crate::escape::shown(name)
                    )))
                }
            };
            let (start, end) = info.data_offsets;
            let entry = TensorEntry {
                file: file.to_owned(),
                dtype,
                shape: info.shape.clone(),
                range: data_start + start..data_start + end,
            };
            if let Some(prev) = self.tensors.insert(name.to_owned(), entry) {
                return Err(bad(format!(
                    "tensor {} is also in {}",
                    crate::escape::shown(name),
                    crate::escape::shown(&prev.file)
                )));
            }
        }
        Ok(())
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// All tensors, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorEntry)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks that the tensors are exactly the ones `config` needs, with its shapes.
    pub fn check(&self, config: &LlamaConfig) -> Result<()> {
        let expected = expected_tensors(config);
        let where_ = |name: &str| {
            self.tensors
                .get(name)
                .map_or(WEIGHTS.to_owned(), |t| t.file.clone())
        };
        for (name, shape) in &expected {
            let t = self.tensors.get(name).ok_or_else(|| {
                Error::format(
                    self.tensors
                        .values()
                        .next()
                        .map_or(WEIGHTS, |t| t.file.as_str()),
                    format!("tensor {name} is missing (expected shape {shape:?})"),
                )
            })?;
            if t.shape != *shape {
                return Err(Error::format(
                    where_(name),
                    format!(
                        "tensor {name} has shape {:?}, config.json implies {shape:?}",
                        t.shape
                    ),
                ));
            }
        }
        for name in self.tensors.keys() {
            let known = expected.iter().any(|(n, _)| n == name);
            let tied_head = config.tie_word_embeddings && name == "lm_head.weight";
            if !known && !tied_head && !is_ignorable(name) {
                return Err(Error::format(
                    where_(name),
                    format!(
                        "unexpected tensor {}: this LLaMA-family runtime would ignore it",
                        crate::escape::shown(name)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The dtype shared by all tensors, or `None` when they are mixed.
    pub fn uniform_dtype(&self) -> Option<DType> {
        let mut dtypes = self.tensors.values().map(|t| t.dtype);
        let first = dtypes.next()?;
        dtypes.all(|d| d == first).then_some(first)
    }

    /// Bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.range.len() as u64).sum()
    }
}

/// The tensors a LLaMA-family model of `config` is made of, with their shapes.
pub fn expected_tensors(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let mut out = vec![("model.embed_tokens.weight".to_owned(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out.push(("model.norm.weight".to_owned(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_owned(), vec![v, h]));
    }
    out
}

fn weight_map(json: &[u8]) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index<'a> {
        #[serde(borrow)]
        weight_map: &'a serde_json::value::RawValue,
    }
    let bad = |m: String| Error::format(WEIGHTS_INDEX, m);
    let index: Index<'_> =
        serde_json::from_slice(json).map_err(|e| bad(format!("invalid index: {e}")))?;
    if let Some(dup) = duplicate_key(index.weight_map.get().as_bytes()) {
        return Err(bad(format!(
            "weight_map names {} twice",
            crate::escape::shown(&dup)
        )));
    }
    serde_json::from_str(index.weight_map.get()).map_err(|e| bad(format!("invalid index: {e}")))
}

/// The first key that a JSON object (`text`) has twice, at its top level.
pub fn duplicate_key(text: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(k.clone()) {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    de.deserialize_map(Keys).ok().flatten()
}
