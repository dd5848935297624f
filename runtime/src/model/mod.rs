//! A LLaMA-family model: configuration, weights, RoPE frequencies and the forward pass.

pub mod config;
pub mod llama;
pub mod rope;
pub mod weights;

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::pin::Pin;
use crate::pinned::{PinnedModel, ProgressFn, CONFIG};
use crate::tokenizer::TextTokenizer;
use config::LlamaConfig;
use weights::WeightIndex;

/// A pinned model whose configuration, tokenizer and safetensors headers were all checked.
pub struct CheckedModel {
    /// The verified files.
    pub files: PinnedModel,
    /// Parsed `config.json`.
    pub config: LlamaConfig,
    /// The tokenizer and chat template, parsed once here.
    pub tokenizer: TextTokenizer,
    /// Where every tensor lies.
    pub weights: WeightIndex,
}

impl CheckedModel {
    /// Opens `dir` against `pin` and checks everything the loader will rely on.
    pub fn open(dir: &Path, pin: &Pin, progress: Option<ProgressFn<'_>>) -> Result<Self> {
        Self::from_files(PinnedModel::open(dir, pin, progress)?)
    }

    /// Checks files already read (and pinned, or trusted by the caller: a test tool).
    pub fn from_files(files: PinnedModel) -> Result<Self> {
        let config = LlamaConfig::from_json(files.required(CONFIG)?)?;
        let tokenizer = TextTokenizer::from_model(&files, &config)?;
        let weights = WeightIndex::parse(&files)?;
        weights.check(&config)?;
        Ok(CheckedModel {
            files,
            config,
            tokenizer,
            weights,
        })
    }

    /// What `cocoon check` prints.
    pub fn summary(&self) -> CheckSummary {
        let c = &self.config;
        CheckSummary {
            pin: self.files.pin().to_hex(),
            architecture: c.model_type.clone(),
            parameters: c.parameter_count(),
            dtype: self
                .weights
                .uniform_dtype()
                .map_or("mixed", |d| d.name())
                .to_owned(),
            weight_bytes: self.weights.data_bytes(),
            file_bytes: self.files.total_bytes(),
            files: self.files.manifest().entries().len(),
            layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            attention_heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            vocab_size: c.vocab_size,
            context: c.max_position_embeddings,
            tied_embeddings: c.tie_word_embeddings,
        }
    }
}

/// The facts `cocoon check` reports about a verified model.
#[derive(Clone, Debug, Serialize)]
pub struct CheckSummary {
    /// The pin (64 hex).
    pub pin: String,
    /// `model_type`.
    pub architecture: String,
    /// Parameter count.
    pub parameters: u64,
    /// Stored dtype of the weights, or "mixed".
    pub dtype: String,
    /// Bytes of tensor data.
    pub weight_bytes: u64,
    /// Bytes of all pinned files.
    pub file_bytes: u64,
    /// Number of pinned files.
    pub files: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Query heads.
    pub attention_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context.
    pub context: usize,
    /// Whether the LM head is the embedding matrix.
    pub tied_embeddings: bool,
}
