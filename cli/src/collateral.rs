//! `cocoon collateral`: what to fetch at capture time so that GPU evidence can be verified
//! offline later (docs/attestation.md, "GPU collateral").

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use cocoon_attest::input::{read_bounded, MAX_EVIDENCE_BYTES};
use cocoon_attest::nvgpu::evidence::gpu_evidence_from_bytes;
use cocoon_attest::nvgpu::plan::{plan, RIM_SERVICE};
use cocoon_attest::nvgpu::GpuCollateral;

/// Arguments of `cocoon collateral`.
#[derive(Args)]
pub struct CollateralArgs {
    /// NVIDIA GPU evidence (JSON).
    evidence: PathBuf,
    /// The collateral directory: OCSP requests are written to DIR/requests/, and the RIMs
    /// already in DIR add their certificates' requests.
    #[arg(long)]
    dir: PathBuf,
}

/// Writes the OCSP requests and prints the plan: one JSON object with the RIM ids and the
/// requests, and the `curl` commands that fetch them.
pub fn run(a: &CollateralArgs, out: &mut impl Write) -> Result<()> {
    let bytes = read_bounded(&a.evidence, MAX_EVIDENCE_BYTES)?;
    let e = gpu_evidence_from_bytes(&bytes).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: not NVIDIA GPU evidence (platform nvgpu)",
            a.evidence.display()
        )
    })??;
    let have = if a.dir.is_dir() {
        GpuCollateral::read(&a.dir)?
    } else {
        GpuCollateral::default()
    };
    let p = plan(&e, &have)?;
    let requests = a.dir.join("requests");
    std::fs::create_dir_all(&requests)
        .with_context(|| format!("creating {}", requests.display()))?;
    let mut ocsp = Vec::new();
    let mut commands = Vec::new();
    for f in &p.ocsp {
        let name = format!("ocsp-{}.req", f.serial);
        let path = requests.join(&name);
        std::fs::write(&path, &f.request).with_context(|| format!("writing {}", path.display()))?;
        ocsp.push(json!({"subject": f.subject, "serial": f.serial, "url": f.url, "request": path}));
        commands.push(format!(
            "curl -sf -H 'Content-Type: application/ocsp-request' --data-binary @{} {} -o {}",
            path.display(),
            f.url,
            a.dir.join(format!("ocsp-{}.der", f.serial)).display()
        ));
    }
    for id in &p.rims {
        commands.push(format!(
            "curl -sf {RIM_SERVICE}{id} | python3 -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)[\"rim\"]))' > {}",
            a.dir.join(format!("{id}.xml")).display()
        ));
    }
    writeln!(
        out,
        "{}",
        json!({"rims": p.rims, "ocsp": ocsp, "commands": commands,
               "note": "run the commands where NVIDIA's services are reachable; run this again once the RIMs are in the directory, for their certificates' OCSP requests"})
    )?;
    Ok(())
}
