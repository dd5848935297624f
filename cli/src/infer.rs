//! `cocoon tokenize`, `cocoon logits` and `cocoon run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use cocoon_attest::input::{read_bounded, MAX_RECEIPT_BYTES};
use cocoon_engine::{Engine, EngineConfig, Request};

/// Largest prompt file read (`--prompt-file`).
const MAX_PROMPT_BYTES: u64 = 16 << 20;
use cocoon_runtime::backend::Backend;
use cocoon_runtime::model::llama::Logits;
use cocoon_runtime::notary::{Attestation, AttestedKey, ReceiptRequest};
use cocoon_runtime::verify::parse_receipt;
use cocoon_runtime::{with_runtime, BackendChoice, Opened, Pin, Runtime, SamplingParams};

use crate::progress;

/// A pinned model.
#[derive(Args)]
pub struct ModelArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Expected pin (64 hex).
    #[arg(long)]
    pub pin: String,
}

/// Where to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// CUDA when a device is present, else CPU.
    Auto,
    /// The CPU backend.
    Cpu,
    /// The CPU backend with BF16 products (AVX512-BF16; emulated elsewhere): faster on BF16
    /// weights, other bits than `cpu`; receipts say `cpu:avx512bf16`.
    #[value(name = "cpu:avx512bf16")]
    CpuAvx512Bf16,
    /// The CUDA backend.
    Cuda,
}

/// Backend choice and threads.
#[derive(Args)]
pub struct BackendArgs {
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

/// Arguments of `cocoon logits`.
#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Logits of the last position only, or of every position.
    #[arg(long, value_enum, default_value = "last")]
    positions: PositionsArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum PositionsArg {
    Last,
    All,
}

/// A prompt, given inline or in a file.
#[derive(Args)]
pub struct PromptArgs {
    /// The prompt.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    prompt: Option<String>,
    /// A file holding the prompt (UTF-8, a regular file of at most 16 MiB).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
}

impl PromptArgs {
    /// The prompt's text.
    pub fn text(&self) -> Result<String> {
        match (&self.prompt, &self.prompt_file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => {
                let bytes = read_bounded(f, MAX_PROMPT_BYTES)
                    .with_context(|| format!("reading the prompt from {}", f.display()))?;
                String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("the prompt in {} is not UTF-8", f.display()))
            }
            (None, None) => bail!("give --prompt or --prompt-file"),
        }
    }
}

/// Arguments of `cocoon run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Evidence for the receipt: auto (TDX or SNP, an error if neither), tdx, snp, dev (an
    /// explicitly insecure stand-in) or none. Giving it, or --receipt, makes a receipt.
    #[arg(long, value_enum)]
    attest: Option<AttestArg>,
    /// Bind receipts through an attested ephemeral P-384 key instead of one evidence each.
    #[arg(long)]
    attest_key: bool,
    /// With --attest-key: bind every NVIDIA GPU's confidential-computing evidence into the key
    /// (NVML; fails when a GPU cannot give it).
    #[arg(long)]
    gpu_evidence: bool,
    /// The client's nonce (hex), bound into the receipt.
    #[arg(long)]
    nonce: Option<String>,
    /// Job identifier recorded in the receipt (random when absent).
    #[arg(long)]
    job_id: Option<String>,
    /// Chain after this receipt (its binding becomes `prev`).
    #[arg(long)]
    prev_receipt: Option<PathBuf>,
    /// Write the receipt here (JSON).
    #[arg(long)]
    receipt: Option<PathBuf>,
}

/// Evidence choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttestArg {
    /// TDX or SNP, whichever the machine has.
    Auto,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    Snp,
    /// Insecure stand-in (proves nothing).
    Dev,
    /// No evidence.
    None,
}

fn attestation(args: &RunArgs) -> Result<Option<Attestation>> {
    let Some(kind) = args
        .attest
        .or(args.receipt.as_ref().map(|_| AttestArg::Auto))
    else {
        return Ok(None);
    };
    make_attestation(kind, args.attest_key, args.gpu_evidence).map(Some)
}

/// How receipts will be bound: `kind` of evidence, through an attested key or directly.
pub fn make_attestation(
    kind: AttestArg,
    attest_key: bool,
    gpu_evidence: bool,
) -> Result<Attestation> {
    if gpu_evidence && !attest_key {
        anyhow::bail!("--gpu-evidence binds GPUs into an attested key: it needs --attest-key");
    }
    let name = match kind {
        AttestArg::None => return Ok(Attestation::None),
        AttestArg::Dev => {
            eprintln!("warning: --attest dev: the receipt's evidence is an insecure stand-in that proves nothing");
            "dev"
        }
        AttestArg::Auto => "auto",
        AttestArg::Tdx => "tdx",
        AttestArg::Snp => "snp",
    };
    let provider = cocoon_attest::provider::select(name).map_err(|e| match e {
        cocoon_attest::Error::NoTee { .. } => {
            anyhow::anyhow!("{e}: --attest dev or --attest none")
        }
        e => e.into(),
    })?;
    if kind != AttestArg::Dev {
        eprintln!("attestation: {} evidence", provider.platform());
    }
    Ok(if attest_key {
        let gpus = |nonce| {
            if gpu_evidence {
                cocoon_attest::nvgpu::collect::collect(nonce)
            } else {
                Ok(Vec::new())
            }
        };
        let key = AttestedKey::with_gpus(provider.as_ref(), &gpus)?;
        if let Some(g) = &key.json().evidence.gpus {
            eprintln!("attestation: {} GPU evidence bound into the key", g.len());
        }
        Attestation::Key(Box::new(key))
    } else {
        Attestation::Direct(provider)
    })
}

/// Opens the model on the chosen backend. `cuda` without a usable device is an error (exit
/// 2); `auto` takes CUDA when a driver and a device are present and falls back to the CPU,
/// with a warning, when the device cannot be used.
pub fn open_model(model: &ModelArgs, backend: &BackendArgs, quiet: bool) -> Result<Opened> {
    let pin: Pin = model.pin.parse()?;
    let choice = match backend.backend {
        BackendArg::Auto => BackendChoice::Auto,
        BackendArg::Cpu => BackendChoice::Cpu,
        BackendArg::CpuAvx512Bf16 => BackendChoice::CpuBf16,
        BackendArg::Cuda => BackendChoice::Cuda,
    };
    let bar = progress::Bytes::new("loading", quiet);
    let opened = Opened::open(
        &model.model,
        &pin,
        choice,
        backend.device,
        backend.threads,
        Some(&|n| bar.add(n)),
    );
    bar.finish();
    match (opened, choice) {
        (Err(e @ cocoon_runtime::Error::Backend(_)), BackendChoice::Cuda) => {
            Err(anyhow::Error::new(e).context("--backend cuda: the CUDA backend cannot run here"))
        }
        (r, _) => Ok(r?),
    }
}

/// `cocoon tokenize`.
pub fn tokenize(
    model: &ModelArgs,
    text: &str,
    special: bool,
    quiet: bool,
    out: &mut impl Write,
) -> Result<()> {
    let runtime = open_model(
        model,
        &BackendArgs {
            backend: BackendArg::Cpu,
            threads: 1,
            device: 0,
        },
        quiet,
    )?;
    let ids = with_runtime!(runtime, |r| r.tokenizer().encode(text, special)?);
    writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    Ok(())
}

/// `cocoon logits`.
pub fn logits(args: &LogitsArgs, quiet: bool, out: &mut impl Write) -> Result<()> {
    let opened = open_model(&args.model, &args.backend, quiet)?;
    with_runtime!(opened, |runtime| logits_on(&runtime, args, out))
}

fn logits_on<B: Backend>(
    runtime: &Runtime<B>,
    args: &LogitsArgs,
    out: &mut impl Write,
) -> Result<()> {
    let model = runtime.model();
    let mut session = model.session_with_capacity(args.tokens.len())?;
    let which = match args.positions {
        PositionsArg::Last => Logits::Last,
        PositionsArg::All => Logits::All,
    };
    let values = model.forward(&mut session, &args.tokens, which)?;
    let rows: Vec<&[f32]> = values.chunks(model.config.vocab_size).collect();
    writeln!(
        out,
        "{}",
        serde_json::json!({"tokens": args.tokens, "logits": rows})
    )?;
    Ok(())
}

/// `cocoon run`.
pub fn run(args: &RunArgs, quiet: bool, out: &mut impl Write) -> Result<()> {
    let prompt = args.prompt.text()?;
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
    };
    params.validate()?;
    if let Some(n) = &args.nonce {
        cocoon_runtime::notary::check_nonce(n)?;
    }
    let attestation = attestation(args)?;
    let prev = match &args.prev_receipt {
        None => None,
        Some(f) => {
            let text = String::from_utf8(read_bounded(f, MAX_RECEIPT_BYTES)?)
                .map_err(|_| anyhow::anyhow!("{}: malformed receipt: not UTF-8", f.display()))?;
            Some(
                parse_receipt(&text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| f.display().to_string())?
                    .binding,
            )
        }
    };
    let request = ReceiptRequest {
        nonce: args.nonce.clone(),
        job_id: args.job_id.clone(),
        prev,
        sealed_request_sha256: None,
    };
    let opened = open_model(&args.model, &args.backend, quiet)?;
    // One request, through the same scheduler `cocoon serve` and the C API use.
    let engine = Engine::from_opened(
        opened,
        EngineConfig {
            max_batch: 1,
            max_queue: 1,
            ..Default::default()
        },
    )?;
    generate_on(
        &engine,
        args,
        &prompt,
        &params,
        attestation.as_ref(),
        &request,
        out,
    )
}

/// The generation of `cocoon run`.
fn generate_on(
    engine: &Engine,
    args: &RunArgs,
    prompt: &str,
    params: &SamplingParams,
    attestation: Option<&Attestation>,
    request: &ReceiptRequest,
    out: &mut impl Write,
) -> Result<()> {
    let mut write_error = None;
    let mut on_piece = |piece: &str| {
        if args.json {
            return true;
        }
        match out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    };
    let (generation, receipt) = match attestation {
        Some(att) => {
            let (g, r) = engine.generate_with_receipt(
                prompt,
                args.raw,
                params,
                att,
                request,
                &mut on_piece,
            )?;
            (g, Some(r))
        }
        None => {
            let ids = engine.model().prompt_ids(prompt, args.raw)?;
            let g = engine.generate(Request::new(ids, params.clone()), &mut on_piece)?;
            (g, None)
        }
    };
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if !args.json {
        // End the streamed answer's line before anything else is said on stderr.
        writeln!(out)?;
        out.flush()?;
    }
    if let (Some(path), Some(r)) = (&args.receipt, &receipt) {
        std::fs::write(path, serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "receipt: {} (binding {}…)",
            path.display(),
            &r.binding[..16]
        );
    }
    if args.json {
        let v = serde_json::json!({
            "text": generation.text,
            "input_ids": generation.input_ids,
            "output_ids": generation.output_ids,
            "finish": generation.finish.as_str(),
            "receipt": receipt,
        });
        writeln!(out, "{v}")?;
    }
    tracing::info!(
        prefill_us = generation.prefill_us,
        decode_us = generation.decode_us,
        input_tokens = generation.input_ids.len(),
        output_tokens = generation.output_ids.len(),
        "done"
    );
    Ok(())
}
