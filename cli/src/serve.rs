//! `cocoon serve`: the OpenAI-compatible worker (docs/design.md §11, docs/serve.md).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use cocoon_engine::{Engine, EngineConfig};
use cocoon_serve::{ServeOptions, Server, StreamFormat};

use crate::infer::{make_attestation, open_model, AttestArg, BackendArgs, ModelArgs};

/// Arguments of `cocoon serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (port 0: any free port; the line `listening on http://…` says
    /// which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    backend: BackendArgs,
    /// Evidence for receipts: auto (TDX or SNP; an error at start where there is neither),
    /// tdx, snp, dev (an insecure stand-in that proves nothing) or none.
    #[arg(long, value_enum, default_value = "auto")]
    attest: AttestArg,
    /// One quote at start binding an ephemeral signing key; each receipt is signed by it
    /// (recommended for servers: a quote per answer is slow).
    #[arg(long)]
    attest_key: bool,
    /// With --attest-key: bind every NVIDIA GPU's confidential-computing evidence into the key
    /// (NVML; fails when a GPU cannot give it).
    #[arg(long)]
    gpu_evidence: bool,
    /// The model's name in /v1/models and requests (default: the model directory's name).
    #[arg(long)]
    model_name: Option<String>,
    /// Most requests running at once.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Most requests waiting; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest max_tokens a request may ask for (also the default).
    #[arg(long, default_value_t = 2048)]
    max_tokens_limit: u32,
    /// Largest request body, bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Bound on the KV cache's memory, MiB.
    #[arg(long, default_value_t = 4096)]
    kv_memory_mib: u64,
    /// A file of API keys, one a line; requests then need `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// How streams are framed: sse (`data:` lines and `[DONE]`) or ndjson (one bare JSON
    /// object a line, what a COCOON worker's relay reads).
    #[arg(long, value_enum, default_value = "sse")]
    stream_format: StreamFormatArg,
    /// Collateral for verifying TDX or SNP evidence (own evidence and /v1/cocoon/verify).
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// How long a client may take to send its request body, seconds (408 beyond).
    #[arg(long, default_value_t = 30)]
    body_timeout_s: u64,
    /// Longest a request may run, seconds.
    #[arg(long, default_value_t = 600)]
    request_timeout_s: u64,
    /// On SIGINT or SIGTERM: how long running requests may go on, seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_s: u64,
    /// Logs as JSON lines (stderr).
    #[arg(long)]
    pub json_log: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum StreamFormatArg {
    Sse,
    Ndjson,
}

/// Largest API key file.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

fn api_keys(path: &std::path::Path) -> Result<Vec<String>> {
    let bytes = cocoon_attest::input::read_bounded(path, MAX_KEY_FILE_BYTES)?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{}: no API key in it", path.display());
    }
    if let Some(k) = keys.iter().find(|k| k.len() < 16) {
        bail!(
            "{}: an API key of {} characters is too short to be a secret (16 at least)",
            path.display(),
            k.len()
        );
    }
    Ok(keys)
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(args: &ServeArgs, quiet: bool, out: &mut impl Write) -> Result<()> {
    if args.max_batch == 0 || args.max_queue == 0 || args.max_tokens_limit == 0 {
        bail!("--max-batch, --max-queue and --max-tokens-limit must be at least 1");
    }
    if args.max_body_bytes < 1024 {
        bail!("--max-body-bytes must be at least 1024");
    }
    let model_name = match &args.model_name {
        Some(n) if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) => {
            bail!("--model-name must be 1 to 256 characters, no control characters")
        }
        Some(n) => n.clone(),
        None => std::fs::canonicalize(&args.model.model)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    let keys = match &args.api_key_file {
        Some(f) => api_keys(f)?,
        None => Vec::new(),
    };
    // Attestation first: `--attest auto` without a TEE fails before the model is loaded.
    let attestation = make_attestation(args.attest, args.attest_key, args.gpu_evidence)?;
    let opened = open_model(&args.model, &args.backend, quiet)?;
    let engine = Arc::new(Engine::from_opened(
        opened,
        EngineConfig {
            max_batch: args.max_batch,
            max_queue: args.max_queue,
            kv_memory_bytes: args.kv_memory_mib.saturating_mul(1 << 20),
            ..Default::default()
        },
    )?);
    let options = ServeOptions {
        listen: args.listen,
        model_name,
        max_tokens_limit: args.max_tokens_limit,
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout_s.max(1)),
        request_timeout: Duration::from_secs(args.request_timeout_s.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
        stream_format: match args.stream_format {
            StreamFormatArg::Sse => StreamFormat::Sse,
            StreamFormatArg::Ndjson => StreamFormat::Ndjson,
        },
        api_keys: keys,
        collateral: args.collateral.clone(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("cocoon-http")
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async {
        let server = Server::bind(engine, attestation, options)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let ev = server.evidence();
        eprintln!(
            "evidence: {} ({} mode): {}{}",
            ev.platform,
            ev.mode,
            ev.verdict,
            if ev.reasons.is_empty() {
                String::new()
            } else {
                format!(" — {}", ev.reasons.join("; "))
            }
        );
        if ev.platform == "dev" {
            eprintln!("warning: dev evidence: receipts from this server prove nothing about where they ran");
        }
        writeln!(out, "listening on http://{}", server.local_addr()?)?;
        out.flush()?;
        server.serve(stop_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    eprintln!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
