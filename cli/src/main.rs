//! `cocoon`: the command line of the Cocoon runtime (docs/design.md §5).
//!
//! Exit codes: 0 success, 1 verification rejected, 2 bad input, usage or I/O.
//! Results go to stdout, progress and logs to stderr.

mod attest;
mod audit;
mod collateral;
mod infer;
mod progress;
mod replay;
mod seal;
mod serve;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cocoon_runtime::model::weights::DType;
use cocoon_runtime::{manifest_of, CheckedModel, Pin};

/// mimalloc keeps freed memory for reuse instead of giving it back to the kernel at once: with
/// glibc's allocator, each pass's buffers and KV blocks were fresh pages, and their faults and
/// zeroing were ~40 % of a 64-token CPU prefill (bench/RESULTS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cocoon",
    version,
    about = "Confidential, verifiable LLM inference runtime"
)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the pin of a model directory (SHA-256 of its sha256sum manifest).
    Pin {
        /// Model directory.
        dir: PathBuf,
        /// Print one JSON object with the pin and the manifest.
        #[arg(long)]
        json: bool,
        /// Also write the manifest as `cocoon.sha256` in the directory, so that a later pin
        /// mismatch names the changed file.
        #[arg(long)]
        write_manifest: bool,
    },
    /// Verify a model against its pin and check config, tokenizer and every tensor header.
    Check {
        /// Model directory.
        #[arg(long)]
        model: PathBuf,
        /// Expected pin (64 hex).
        #[arg(long)]
        pin: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of a text (JSON array), as the model's tokenizer gives them.
    Tokenize {
        #[command(flatten)]
        model: infer::ModelArgs,
        /// The text.
        #[arg(long)]
        text: String,
        /// Do not add the tokenizer's special tokens (BOS…).
        #[arg(long)]
        no_special: bool,
    },
    /// Print the logits of a token sequence.
    Logits(infer::LogitsArgs),
    /// Generate an answer to a prompt.
    Run(infer::RunArgs),
    /// Check a worker's attested key and seal a request to it (docs/sealed.md; exit 1 when
    /// the key is not trusted).
    Seal(seal::SealArgs),
    /// Open a sealed answer and check that its receipt names the request (exit 1 otherwise).
    Unseal(seal::UnsealArgs),
    /// Serve the model over HTTP: the OpenAI API with a receipt on every answer, a status
    /// page, metrics (docs/serve.md).
    Serve(serve::ServeArgs),
    /// Inspect or verify TEE evidence.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Verify a receipt (exit 0 accepted, 1 rejected, 2 malformed).
    Verify(verify::VerifyArgs),
    /// Plan the collateral GPU evidence needs offline: RIM ids, OCSP requests (written to
    /// DIR/requests/) and the commands that fetch them.
    Collateral(collateral::CollateralArgs),
    /// Re-execute a receipt's work: is the answer this model's with these parameters? (exit 0
    /// consistent, 1 inconsistent, 2 bad input)
    Replay(replay::ReplayArgs),
    /// Replay a seeded fraction of a directory of receipt/prompt/answer triples (exit 0 all
    /// consistent, 1 one inconsistent, 2 unreadable)
    Audit(audit::AuditArgs),
    /// Convert a LLaMA GGUF file into a pinned Hugging Face model directory.
    ImportGguf {
        /// The GGUF file.
        input: PathBuf,
        /// Output directory (created).
        out_dir: PathBuf,
        /// Dtype of the stored weights.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: DTypeArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DTypeArg {
    Bf16,
    F16,
    F32,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
            DTypeArg::F32 => DType::F32,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server says what it does (requests, never their content); other commands only warn.
    let (default_level, json) = match &cli.command {
        Command::Serve(a) => ("warn,cocoon_serve=info", a.json_log),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COCOON_LOG")
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Pin {
            dir,
            json,
            write_manifest,
        } => {
            let bar = progress::Bytes::new("hashing", cli.quiet);
            let manifest = manifest_of(&dir, Some(&|n| bar.add(n)))?;
            bar.finish();
            let manifest = &manifest;
            if write_manifest {
                let path = dir.join(cocoon_runtime::pin::MANIFEST_FILE);
                std::fs::write(&path, manifest.text())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                let files: Vec<_> = manifest
                    .entries()
                    .iter()
                    .map(|e| serde_json::json!({"path": e.path, "sha256": hex::encode(e.sha256)}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"pin": manifest.pin().to_hex(), "files": files})
                )?;
            } else {
                write!(out, "{}", manifest.text())?;
                writeln!(out, "{}", manifest.pin())?;
            }
        }
        Command::Check { model, pin, json } => {
            let pin: Pin = pin.parse()?;
            let bar = progress::Bytes::new("verifying", cli.quiet);
            let checked = CheckedModel::open(&model, &pin, Some(&|n| bar.add(n)))?;
            bar.finish();
            let s = checked.summary();
            if json {
                writeln!(out, "{}", serde_json::to_string(&s)?)?;
            } else {
                writeln!(
                    out,
                    "ok: {} verified against pin {}",
                    model.display(),
                    s.pin
                )?;
                writeln!(out, "architecture: {} ({} layers, hidden {}, heads {}/{} kv, vocab {}, context {}{})",
                    s.architecture, s.layers, s.hidden_size, s.attention_heads, s.kv_heads, s.vocab_size, s.context,
                    if s.tied_embeddings { ", tied embeddings" } else { "" })?;
                writeln!(out, "parameters: {}", s.parameters)?;
                writeln!(out, "dtype: {}", s.dtype)?;
                writeln!(
                    out,
                    "bytes: {} of weights, {} in {} pinned files",
                    s.weight_bytes, s.file_bytes, s.files
                )?;
            }
        }
        Command::Tokenize {
            model,
            text,
            no_special,
        } => infer::tokenize(&model, &text, !no_special, cli.quiet, &mut out)?,
        Command::Logits(args) => infer::logits(&args, cli.quiet, &mut out)?,
        Command::Run(args) => infer::run(&args, cli.quiet, &mut out)?,
        Command::Seal(args) => return seal::seal(&args, &mut out),
        Command::Unseal(args) => return seal::unseal(&args, &mut out),
        Command::Serve(args) => serve::serve(&args, cli.quiet, &mut out)?,
        Command::Verify(args) => return verify::verify(&args, &mut out),
        Command::Replay(args) => return replay::run(&args, cli.quiet, &mut out),
        Command::Audit(args) => return audit::run(&args, cli.quiet, &mut out),
        Command::Attest(cmd) => return attest::run(&cmd, &mut out),
        Command::Collateral(args) => collateral::run(&args, &mut out)?,
        Command::ImportGguf {
            input,
            out_dir,
            dtype,
        } => {
            // Any size, but a regular file (a FIFO would block forever).
            let bytes = cocoon_attest::input::read_bounded(&input, u64::MAX)?;
            let pin = cocoon_runtime::gguf::import::import_gguf(&bytes, &out_dir, dtype.into())
                .with_context(|| format!("importing {}", input.display()))?;
            writeln!(out, "{pin}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
