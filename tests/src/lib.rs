//! Helpers for the cross-crate tests: tiny LLaMA model directories with random weights, a
//! byte-level tokenizer, the path of the `cocoon` binary, and the independent attestation
//! verifiers ([`peer`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, View};

pub mod peer;

/// Shape of a tiny test model.
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// Residual width.
    pub hidden: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Whether the head is tied to the embedding.
    pub tied: bool,
    /// Stored dtype: "F32", "BF16" or "F16".
    pub dtype: &'static str,
    /// Seed of the weights.
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            hidden: 32,
            intermediate: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            tied: true,
            dtype: "F32",
            seed: 1,
        }
    }
}

/// Number of tokens of the test tokenizer: 256 bytes plus 3 specials.
pub const TINY_VOCAB: usize = 259;

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
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

/// A deterministic xorshift generator for weights and test inputs (seed: any non-zero value).
pub struct Rng(pub u64);

impl Rng {
    /// The next value, uniform in [-1, 1) on a 2⁻²³ grid.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn encode(dtype: &str, values: &[f32]) -> (Dtype, Vec<u8>) {
    match dtype {
        "BF16" => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        "F16" => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        _ => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    }
}

/// The config.json of `spec`.
pub fn tiny_config(spec: &TinySpec) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads, "vocab_size": TINY_VOCAB,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": spec.tied, "bos_token_id": 256, "eos_token_id": 257,
        "hidden_act": "silu", "torch_dtype": "float32"
    })
}

/// The tensors of `spec` (name → (shape, values)), random in [-0.5, 0.5), norms near 1.
pub fn tiny_tensors(spec: &TinySpec) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (h, i, d) = (spec.hidden, spec.intermediate, spec.hidden / spec.heads);
    let mut shapes = vec![("model.embed_tokens.weight".to_owned(), vec![TINY_VOCAB, h])];
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![spec.heads * d, h],
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                vec![spec.kv_heads * d, h],
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                vec![spec.kv_heads * d, h],
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, spec.heads * d],
            ),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    shapes.push(("model.norm.weight".to_owned(), vec![h]));
    if !spec.tied {
        shapes.push(("lm_head.weight".to_owned(), vec![TINY_VOCAB, h]));
    }
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = shape.len() == 1;
            let values = (0..n)
                .map(|_| {
                    if norm {
                        1.0 + 0.2 * rng.next_f32()
                    } else {
                        0.5 * rng.next_f32()
                    }
                })
                .collect();
            (name, (shape, values))
        })
        .collect()
}

/// Serialises tensors as a safetensors file.
pub fn safetensors_bytes(
    dtype: &str,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Vec<u8> {
    let raw: BTreeMap<&str, Raw> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let (dtype, data) = encode(dtype, values);
            (
                name.as_str(),
                Raw {
                    dtype,
                    shape: shape.clone(),
                    data,
                },
            )
        })
        .collect();
    safetensors::serialize(raw.iter().map(|(k, v)| (*k, v)), None)
        .expect("serialisable test tensors")
}

/// GPT-2's printable stand-in for each byte, as byte-level BPE vocabularies spell them.
pub fn byte_level_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return char::from(b);
    }
    let shift = (0..=b).filter(|x| !printable(*x)).count() as u32 - 1;
    char::from_u32(256 + shift).expect("valid code point")
}

/// A byte-level BPE tokenizer.json: 256 byte tokens, no merges, three special tokens
/// (`<|bos|>` 256, `<|eos|>` 257, `<|pad|>` 258).
pub fn tiny_tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8)
        .map(|b| (byte_level_char(b).to_string(), serde_json::json!(b)))
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<|bos|>"), special(257, "<|eos|>"), special(258, "<|pad|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
}

/// A chat template in the ChatML style of SmolLM2.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|bos|>' + message['role'] + '\n' + message['content'] + '<|eos|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|bos|>assistant\n' }}{% endif %}";

/// Writes a complete tiny model directory: config, tokenizer, tokenizer config, weights.
pub fn write_tiny_model(dir: &Path, spec: &TinySpec) {
    std::fs::create_dir_all(dir).expect("model dir");
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    std::fs::write(dir.join("config.json"), json(&tiny_config(spec))).expect("config");
    std::fs::write(dir.join("tokenizer.json"), json(&tiny_tokenizer_json())).expect("tokenizer");
    let tc = serde_json::json!({"chat_template": TINY_CHAT_TEMPLATE, "bos_token": "<|bos|>", "eos_token": "<|eos|>"});
    std::fs::write(dir.join("tokenizer_config.json"), json(&tc)).expect("tokenizer_config");
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(spec.dtype, &tiny_tensors(spec)),
    )
    .expect("weights");
}

/// The `cocoon` binary built for this test run (`target/<profile>/cocoon`).
pub fn cocoon_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join(format!("cocoon{}", std::env::consts::EXE_SUFFIX))
}

/// Output of one `cocoon` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cocoon` with `args`.
pub fn cocoon<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(cocoon_bin())
        .args(args)
        .output()
        .expect("run cocoon");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The pin printed by `cocoon pin DIR` (its last stdout line).
pub fn pin_of(dir: &Path) -> String {
    let run = cocoon([Path::new("pin"), dir]);
    assert_eq!(run.code, 0, "cocoon pin failed: {}", run.stderr);
    run.stdout.lines().last().expect("pin line").to_owned()
}

/// Token ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A receipt for a short generation on the tiny golden model `tiny-gqa` ("hello", raw, 8 greedy
/// tokens), bound by `att` with `request`.
pub fn tiny_receipt(
    att: &cocoon_runtime::notary::Attestation,
    request: &cocoon_runtime::notary::ReceiptRequest,
) -> cocoon_runtime::receipt::Receipt {
    use cocoon_runtime::notary::{body, issue, Facts};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/tiny-gqa");
    let pin = cocoon_runtime::manifest_of(&dir, None).expect("pin").pin();
    let rt = cocoon_runtime::Runtime::open_cpu(&dir, &pin, 1, None).expect("open");
    let params = cocoon_runtime::SamplingParams {
        max_tokens: 8,
        ..Default::default()
    };
    let ids = rt.prompt_ids("hello", true).expect("prompt");
    let generation = rt.generate(&ids, &params, &mut |_| true).expect("generate");
    let facts = Facts {
        pin,
        backend: "cpu".into(),
        params: &params,
        chat_template: false,
        prompt: "hello",
        generation: &generation,
    };
    issue(body(&facts, request).expect("body"), att).expect("issue")
}
