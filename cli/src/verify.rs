//! `cocoon verify`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use cocoon_runtime::manifest_of;
use cocoon_runtime::verify::{parse_receipt, verify_chain, verify_receipt, VerifyOptions};

/// Arguments of `cocoon verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The receipt (JSON).
    receipt: PathBuf,
    /// Accept dev evidence (it proves nothing).
    #[arg(long)]
    allow_dev: bool,
    /// Re-pin this model directory and require the receipt's model_pin to equal it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Further receipts that follow RECEIPT in a chain: each `prev` must be the previous binding.
    #[arg(long, num_args = 1..)]
    chain: Vec<PathBuf>,
    #[command(flatten)]
    checks: crate::attest::CheckArgs,
    /// NVIDIA GPU collateral for the key's GPU evidence: a directory of driver and VBIOS RIMs
    /// (*.xml, *.swidtag) and OCSP responses (docs/attestation.md).
    #[arg(long)]
    gpu_collateral: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the verification; exit 1 when rejected.
pub fn verify(args: &VerifyArgs, out: &mut impl Write) -> Result<ExitCode> {
    let model_pin = match &args.model {
        Some(dir) => Some(manifest_of(dir, None)?.pin()),
        None => None,
    };
    let opts = VerifyOptions {
        allow_dev: args.allow_dev,
        model_pin: model_pin.map(|p| p.0),
        collateral: args.checks.collateral().map(Into::into),
        at: Some(args.checks.at()?),
        policy: args.checks.policy()?,
        gpu_collateral: args.gpu_collateral.clone(),
        ..Default::default()
    };
    let mut receipts = Vec::new();
    for path in std::iter::once(&args.receipt).chain(&args.chain) {
        let text = String::from_utf8(cocoon_attest::input::read_bounded(
            path,
            cocoon_attest::input::MAX_RECEIPT_BYTES,
        )?)
        .map_err(|_| anyhow::anyhow!("{}: malformed receipt: not UTF-8", path.display()))?;
        receipts.push(
            parse_receipt(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| path.display().to_string())?,
        );
    }
    let mut reports: Vec<_> = receipts.iter().map(|r| verify_receipt(r, &opts)).collect();
    let chain_reasons = verify_chain(&receipts);
    if let Some(last) = reports.last_mut() {
        last.reasons.extend(chain_reasons);
        if !last.reasons.is_empty() {
            last.verdict = "rejected";
        }
    }
    let ok = reports.iter().all(|r| r.ok());
    if args.json {
        let v = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(&reports)?
        };
        writeln!(out, "{v}")?;
    } else {
        for (path, r) in std::iter::once(&args.receipt)
            .chain(&args.chain)
            .zip(&reports)
        {
            writeln!(
                out,
                "{}: {} ({} evidence, {} mode, model {})",
                path.display(),
                r.verdict,
                r.platform,
                r.mode,
                r.model_pin
            )?;
            for reason in &r.reasons {
                writeln!(out, "  rejected: {reason}")?;
            }
            if r.platform == "dev" && !r.reasons.is_empty() && !args.allow_dev {
                writeln!(out, "  hint: --allow-dev accepts dev evidence, for testing")?;
            }
            for note in &r.notes {
                writeln!(out, "  note: {note}")?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
