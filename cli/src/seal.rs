//! `cocoon seal` and `cocoon unseal`: the client's side of sealed requests (docs/sealed.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{Map, Value};

use cocoon_attest::input::read_bounded;
use cocoon_sealed::client::{check_key, open_response, seal_request, ClientSecret, KeyCheck};
use cocoon_sealed::plaintext::{messages_from_json, Prompt};
use cocoon_sealed::Sealed;

/// Largest key document, response or secret file read.
const MAX_FILE_BYTES: u64 = 32 << 20;

/// Arguments of `cocoon seal`.
#[derive(Args)]
pub struct SealArgs {
    /// The worker's key document (`GET /v1/cocoon/key`).
    #[arg(long)]
    key: PathBuf,
    /// The prompt (one user message through the chat template, or as is with --raw).
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    prompt: Option<String>,
    /// A conversation: a JSON list of {"role", "content"}.
    #[arg(long)]
    messages: Option<String>,
    /// Give the prompt to the model as is, without the chat template.
    #[arg(long, requires = "prompt")]
    raw: bool,
    /// Generation parameters (JSON object: max_tokens, temperature, top_p, top_k, seed, stop).
    #[arg(long)]
    params: Option<String>,
    /// Job identifier for the receipt.
    #[arg(long)]
    job_id: Option<String>,
    /// Nonce (hex) for the receipt.
    #[arg(long)]
    nonce: Option<String>,
    /// Accept a key whose evidence is dev (it proves nothing: for tests only).
    #[arg(long)]
    allow_dev: bool,
    #[command(flatten)]
    checks: crate::attest::CheckArgs,
    /// NVIDIA GPU collateral (RIMs, OCSP responses) for a key carrying GPU evidence.
    #[arg(long)]
    gpu_collateral: Option<PathBuf>,
    /// Where to write the sealed request (JSON, to POST to /v1/cocoon/sealed).
    #[arg(long)]
    out: PathBuf,
    /// Where to write the secret that opens the answer (created with mode 0600).
    #[arg(long)]
    secret_out: PathBuf,
}

/// Arguments of `cocoon unseal`.
#[derive(Args)]
pub struct UnsealArgs {
    /// The sealed response.
    response: PathBuf,
    /// The secret `cocoon seal` wrote.
    #[arg(long)]
    secret: PathBuf,
    /// Print {"text", "output_ids", "finish", "receipt"} instead of the text.
    #[arg(long)]
    json: bool,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(path, MAX_FILE_BYTES)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// `cocoon seal`: checks the key, then seals. Exit 1 when the key is not trusted.
pub fn seal(args: &SealArgs, out: &mut impl Write) -> Result<std::process::ExitCode> {
    let prompt = match (&args.prompt, &args.messages) {
        (Some(p), _) => Prompt::Text {
            prompt: p.clone(),
            raw: args.raw,
        },
        (None, Some(m)) => {
            let list: Value = serde_json::from_str(m).context("--messages must be JSON")?;
            Prompt::Messages(messages_from_json(&list).context("--messages")?)
        }
        (None, None) => bail!("give --prompt or --messages"),
    };
    let params: Map<String, Value> = match &args.params {
        Some(p) => serde_json::from_str(p).context("--params must be a JSON object")?,
        None => Map::new(),
    };
    if let Some(n) = &args.nonce {
        cocoon_runtime::notary::check_nonce(n)?;
    }
    let check = KeyCheck {
        allow_dev: args.allow_dev,
        collateral: args.checks.collateral().map(Path::to_path_buf),
        policy: args.checks.policy()?,
        at: Some(args.checks.at()?),
        gpu_collateral: args.gpu_collateral.clone(),
    };
    let key = match check_key(&read(&args.key)?, &check) {
        Ok(k) => k,
        Err(e @ cocoon_sealed::SealError::Untrusted(_)) => {
            eprintln!("refused: {e}; nothing was sealed");
            return Ok(std::process::ExitCode::from(1));
        }
        Err(e) => return Err(e).with_context(|| args.key.display().to_string()),
    };
    if key.platform == "dev" {
        eprintln!("warning: the key's evidence is dev: it proves nothing about where the prompt will be opened");
    }
    let (sealed, secret) = seal_request(
        &key,
        prompt,
        params,
        args.job_id.clone(),
        args.nonce.clone(),
    )?;
    write_private(&args.secret_out, secret.to_json().as_bytes())?;
    std::fs::write(&args.out, sealed.to_json().to_string())
        .with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(out, "{}", secret.request_sha256())?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `cocoon unseal`: opens the answer and checks that its receipt names this request. Exit 1
/// when it does not open or does not belong to the request.
pub fn unseal(args: &UnsealArgs, out: &mut impl Write) -> Result<std::process::ExitCode> {
    let secret = ClientSecret::from_json(&read(&args.secret)?)
        .with_context(|| args.secret.display().to_string())?;
    let sealed = Sealed::parse(&read(&args.response)?)
        .with_context(|| args.response.display().to_string())?;
    let response = match open_response(&secret, &sealed) {
        Ok(r) => r,
        Err(e @ (cocoon_sealed::SealError::NotOpened | cocoon_sealed::SealError::Mismatch(_))) => {
            eprintln!("rejected: {e}");
            return Ok(std::process::ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let v = serde_json::json!({"text": response.text, "output_ids": response.output_ids,
            "finish": response.finish, "receipt": response.receipt});
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{}", response.text)?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
