//! `cocoon replay`: re-executes a receipt's work and says whether the answer came from this
//! model with these parameters (docs/design.md §13, docs/spot-check.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use cocoon_attest::input::{read_bounded, MAX_RECEIPT_BYTES};
use cocoon_engine::replay::{receipt_params, ReplayMode};
use cocoon_engine::replay_job::{receipt_time, replay_job, Answer, ReplayJob};
use cocoon_runtime::backend::Backend;
use cocoon_runtime::clock::UtcTime;
use cocoon_runtime::verify::parse_receipt;
use cocoon_runtime::{with_runtime, SamplingParams};

use crate::infer::{open_model, BackendArgs, ModelArgs, PromptArgs};

/// Arguments of `cocoon replay`.
#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt as it was given.
    #[command(flatten)]
    prompt: PromptArgs,
    /// The prompt was fed as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// The answer's ids: a JSON array, or `cocoon run --json`'s object (`output_ids`, `finish`).
    #[arg(
        long,
        conflicts_with = "output_file",
        required_unless_present = "output_file"
    )]
    output_ids: Option<PathBuf>,
    /// The answer's text (tokenized again: prefer --output-ids, which is exact).
    #[arg(long)]
    output_file: Option<PathBuf>,
    /// The receipt: its pin, parameters and hashes must equal what is replayed.
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// Sampling parameters as JSON (`max_tokens`, `temperature`, `top_p`, `top_k`, `seed`);
    /// with a receipt they must equal its own.
    #[arg(long)]
    params: Option<String>,
    /// How the answer ended (default: the receipt's, else the ids file's, else inferred).
    #[arg(long)]
    finish: Option<String>,
    /// exact (same backend kind) or tolerant (near-ties accepted: another backend).
    #[arg(long, default_value = "exact")]
    mode: ReplayMode,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn params_from_json(text: &str) -> Result<SamplingParams> {
    let v: Value = serde_json::from_str(text).context("--params is not JSON")?;
    let o = v.as_object().context("--params is not a JSON object")?;
    let mut p = SamplingParams::default();
    for (k, val) in o {
        let num = || {
            val.as_f64()
                .with_context(|| format!("--params: {k} is not a number"))
        };
        match k.as_str() {
            "max_tokens" => p.max_tokens = num()? as u32,
            "temperature" => p.temperature = num()? as f32,
            "top_p" => p.top_p = num()? as f32,
            "top_k" => p.top_k = num()? as u32,
            "seed" => p.seed = num()? as u64,
            other => bail!("--params: unknown key {other:?}"),
        }
    }
    p.validate()?;
    Ok(p)
}

pub(crate) fn read_text(path: &std::path::Path, what: &str) -> Result<String> {
    String::from_utf8(read_bounded(path, MAX_RECEIPT_BYTES)?)
        .map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8", path.display()))
}

/// `cocoon replay`: exit 0 consistent, 1 inconsistent, 2 bad input.
pub fn run(args: &ReplayArgs, quiet: bool, out: &mut impl Write) -> Result<ExitCode> {
    let prompt = args.prompt.text()?;
    let receipt = match &args.receipt {
        None => None,
        Some(f) => Some(parse_receipt(&read_text(f, "the receipt")?).map_err(anyhow::Error::msg)?),
    };
    let given = args.params.as_deref().map(params_from_json).transpose()?;
    let mut reasons = Vec::new();
    let params = match (&receipt, &given) {
        (Some(r), given) => {
            let p = receipt_params(r)?;
            if given.as_ref().is_some_and(|g| *g != p) {
                reasons.push("--params differ from the receipt's parameters".to_owned());
            }
            p
        }
        (None, Some(g)) => g.clone(),
        (None, None) => SamplingParams::default(),
    };
    let opened = open_model(&args.model, &args.backend, quiet)?;
    // The chat template reads the clock (LLaMA 3 templates print the date): a receipt's own
    // time renders the prompt the model saw.
    let when = match &receipt {
        Some(r) => receipt_time(r)?,
        None => UtcTime::now(),
    };
    let answer = read_answer(args.output_ids.as_deref(), args.output_file.as_deref())?;
    let job = ReplayJob {
        prompt: &prompt,
        raw: args.raw,
        answer,
        finish: args.finish.clone(),
        mode: args.mode,
        receipt: receipt.as_ref(),
        params: &params,
        when,
    };
    let here = with_runtime!(&opened, |rt| rt.model().backend().name());
    if let Some(r) = receipt.as_ref().filter(|_| args.mode == ReplayMode::Exact) {
        let made = &r.body.backend;
        // Another GPU model is expected to differ anyway (that is what tolerant is for); two
        // CPU kinds differ in their bits by design (docs/design.md §16).
        if made != &here && made.starts_with("cpu") && here.starts_with("cpu") {
            tracing::warn!(
                "the receipt was made on backend {made}, this replay runs on {here}: exact \
                 replay needs --backend {made} (or --mode tolerant)"
            );
        }
    }
    let mut report = with_runtime!(opened, |rt| replay_job(&rt, &job))?;
    if !reasons.is_empty() {
        report.reasons.splice(0..0, reasons);
        report.verdict = "inconsistent";
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(out, "verdict: {}", report.verdict)?;
        writeln!(out, "tokens_checked: {}", report.tokens_checked)?;
        writeln!(
            out,
            "first_divergence: {}",
            report
                .first_divergence
                .map_or("none".into(), |i| i.to_string())
        )?;
        writeln!(out, "worst_margin: {}", report.worst_margin)?;
        for r in &report.reasons {
            writeln!(out, "reason: {r}")?;
        }
    }
    Ok(if report.consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The answer read from `--output-ids` (a JSON array, or `cocoon run --json`'s object with
/// `output_ids` and `finish`) or `--output-file` (text, tokenized again).
pub(crate) fn read_answer(
    ids: Option<&std::path::Path>,
    text: Option<&std::path::Path>,
) -> Result<Answer> {
    match (ids, text) {
        (Some(p), _) => {
            let v: Value = serde_json::from_str(&read_text(p, "the ids file")?)
                .context("--output-ids is not JSON")?;
            let finish = v.get("finish").and_then(Value::as_str).map(str::to_owned);
            let ids = v.get("output_ids").unwrap_or(&v);
            let ids = serde_json::from_value(ids.clone())
                .context("--output-ids: expected a JSON array of token ids")?;
            Ok(Answer::Ids { ids, finish })
        }
        (None, Some(p)) => Ok(Answer::Text(read_text(p, "the answer file")?)),
        (None, None) => bail!("give --output-ids or --output-file"),
    }
}
