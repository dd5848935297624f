//! `cocoon attest inspect` and `cocoon attest verify`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use cocoon_attest::appraisal::{
    evidence_from_bytes, inspect, load_collateral, parse_rfc3339, unix_now, verify, AppraisalInput,
};
use cocoon_attest::input::{read_bounded, MAX_EVIDENCE_BYTES};
use cocoon_attest::nvgpu::{self, evidence::gpu_evidence_from_bytes, GpuCollateral, GpuEvidence};
use cocoon_attest::policy::Policy;
use cocoon_attest::Reason;

/// `cocoon attest …`.
#[derive(Subcommand)]
pub enum AttestCommand {
    /// Print the parsed fields of evidence (raw TDX quote, SNP report, dev, a receipt's
    /// evidence JSON, or NVIDIA GPU evidence JSON); no verdict.
    Inspect {
        /// The evidence file.
        evidence: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify evidence (exit 0 ok, 1 rejected, 2 malformed).
    Verify(VerifyArgs),
}

/// What evidence is checked against: collateral, time, policy (`attest verify` and `verify`).
#[derive(Args)]
pub struct CheckArgs {
    /// TDX: DCAP collateral (dcap-qvl JSON, or a directory of PCS files); SNP: certificates and
    /// AMD's CRL (a file, or a directory of *.pem/*.der/*.crt/*.cer/*.crl); NVIDIA GPU: a
    /// directory of driver and VBIOS RIMs (*.xml, *.swidtag) and OCSP responses.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Check validity at this time (RFC 3339 UTC) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Policy (TOML, docs/policy.md): allowed platforms, measurements, TCB statuses, debug,
    /// model pins, receipt age. Without one only signatures and an UpToDate TCB are checked.
    #[arg(long)]
    policy: Option<PathBuf>,
}

impl CheckArgs {
    /// `--at`, or now, in Unix seconds.
    pub fn at(&self) -> Result<u64> {
        Ok(match &self.at {
            Some(t) => parse_rfc3339(t)?,
            None => unix_now(),
        })
    }

    /// The policy file, parsed.
    pub fn policy(&self) -> Result<Option<Policy>> {
        Ok(self.policy.as_deref().map(Policy::read).transpose()?)
    }

    /// `--collateral`.
    pub fn collateral(&self) -> Option<&std::path::Path> {
        self.collateral.as_deref()
    }
}

/// Arguments of `cocoon attest verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The evidence file.
    evidence: PathBuf,
    #[command(flatten)]
    checks: CheckArgs,
    /// Report data (128 hex) the evidence must carry.
    #[arg(long)]
    report_data: Option<String>,
    /// GPU evidence: the nonce (64 hex) the report must carry.
    #[arg(long)]
    nonce: Option<String>,
    /// Accept dev evidence (it proves nothing).
    #[arg(long)]
    allow_dev: bool,
    /// Accept guests and TDs that allow debugging.
    #[arg(long)]
    allow_debug: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn print(v: &serde_json::Value, json: bool, out: &mut impl Write) -> Result<()> {
    if json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            match val {
                serde_json::Value::String(s) => writeln!(out, "{k}: {s}")?,
                serde_json::Value::Array(items) => {
                    for i in items {
                        writeln!(
                            out,
                            "{k}: {}",
                            i.as_str().map_or_else(|| i.to_string(), str::to_owned)
                        )?;
                    }
                }
                other => writeln!(out, "{k}: {other}")?,
            }
        }
    }
    Ok(())
}

/// Runs `cocoon attest`.
pub fn run(cmd: &AttestCommand, out: &mut impl Write) -> Result<ExitCode> {
    let read = |p: &PathBuf| read_bounded(p, MAX_EVIDENCE_BYTES);
    match cmd {
        AttestCommand::Inspect { evidence, json } => {
            let bytes = read(evidence)?;
            if let Some(gpu) = gpu_evidence_from_bytes(&bytes) {
                print(&nvgpu::evidence::inspect(&gpu?)?, *json, out)?;
                return Ok(ExitCode::SUCCESS);
            }
            let e = evidence_from_bytes(&bytes)?;
            print(&inspect(&e)?.to_json(), *json, out)?;
            Ok(ExitCode::SUCCESS)
        }
        AttestCommand::Verify(a) => {
            let bytes = read(&a.evidence)?;
            if let Some(gpu) = gpu_evidence_from_bytes(&bytes) {
                return verify_gpu_evidence(&gpu?, a, out);
            }
            if a.nonce.is_some() {
                anyhow::bail!(
                    "--nonce is for NVIDIA GPU evidence; CPU evidence takes --report-data"
                );
            }
            let e = evidence_from_bytes(&bytes)?;
            let report_data = match &a.report_data {
                None => None,
                Some(h) => {
                    let mut rd = [0u8; 64];
                    hex::decode_to_slice(h, &mut rd)
                        .context("--report-data: not 128 hexadecimal digits")?;
                    Some(rd)
                }
            };
            let at = a.checks.at()?;
            let (cert_files, tdx) = match a.checks.collateral() {
                Some(p) => load_collateral(p, e.platform)?,
                None => (Vec::new(), None),
            };
            let appraisal = AppraisalInput {
                cert_files,
                at,
                report_data,
                allow_dev: a.allow_dev,
                allow_debug: a.allow_debug,
                tdx,
                policy: a.checks.policy()?,
            };
            let v = verify(&e, &appraisal)?;
            print(&v.to_json(), a.json, out)?;
            if !a.json {
                for reason in &v.reasons {
                    match reason {
                        Reason::NoCollateral => writeln!(
                            out,
                            "hint: --collateral PATH gives the TCB info, QE identity and CRLs"
                        )?,
                        Reason::DevEvidence => {
                            writeln!(out, "hint: --allow-dev accepts dev evidence, for testing")?
                        }
                        _ => {}
                    }
                }
            }
            Ok(if v.accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `attest verify` on NVIDIA GPU evidence (DESIGN §14).
fn verify_gpu_evidence(e: &GpuEvidence, a: &VerifyArgs, out: &mut impl Write) -> Result<ExitCode> {
    if a.report_data.is_some() || a.allow_dev || a.allow_debug {
        anyhow::bail!(
            "GPU evidence takes --nonce, not --report-data, --allow-dev or --allow-debug"
        );
    }
    let nonce = match &a.nonce {
        None => None,
        Some(h) => {
            let mut n = [0u8; 32];
            hex::decode_to_slice(h, &mut n).context("--nonce: not 64 hexadecimal digits")?;
            Some(n)
        }
    };
    let collateral = match a.checks.collateral() {
        Some(dir) => GpuCollateral::read(dir)?,
        None => GpuCollateral::default(),
    };
    let policy = a.checks.policy()?.unwrap_or_default();
    let v = nvgpu::verify_gpu(e, &collateral, &policy.nvgpu, nonce, a.checks.at()?)?;
    print(&serde_json::to_value(&v)?, a.json, out)?;
    Ok(if v.verdict == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
