//! Collecting GPU evidence on the machine, through NVML's confidential-computing calls
//! (`nvmlDeviceGetConfComputeGpuAttestationReport` for a 32-byte nonce,
//! `nvmlDeviceGetConfComputeGpuCertificate`), by way of the `nvml-wrapper` crate, which loads
//! `libnvidia-ml.so.1` at run time: a machine without NVIDIA's driver gets an error naming
//! what is missing, never a crash.
//!
//! Every collected report is parsed and its nonce compared with the one asked for before it
//! is returned.

use nvml_wrapper::Nvml;
use serde_json::{json, Value};

use super::chain::Root;
use super::evidence::{Arch, GpuEvidence};
use super::spdm::GpuReport;

/// NVML's confidential-computing state and each GPU's name, for the GPU check and error
/// messages; what cannot be read is reported as the error NVML gave.
pub fn status() -> Value {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => return json!({"nvml": format!("unavailable: {e}")}),
    };
    let text = |r: Result<String, nvml_wrapper::error::NvmlError>| match r {
        Ok(s) => s,
        Err(e) => format!("error: {e}"),
    };
    let count = nvml.device_count().unwrap_or(0);
    let gpus: Vec<Value> = (0..count)
        .map(|i| match nvml.device_by_index(i) {
            Ok(d) => json!({
                "index": i,
                "name": text(d.name()),
                "cc_enabled": text(d.is_cc_enabled().map(|b| b.to_string())),
                "cc_ready": text(d.get_confidential_compute_state().map(|b| b.to_string())),
                "cc_ready_and_production": text(d.check_confidential_compute_status().map(|b| b.to_string())),
            }),
            Err(e) => json!({"index": i, "error": e.to_string()}),
        })
        .collect();
    json!({
        "nvml": "loaded",
        "driver_version": text(nvml.sys_driver_version()),
        "gpus": gpus,
    })
}

/// The architecture of a GPU by NVML's name.
fn arch_of(name: &str) -> Result<Arch, String> {
    let n = name.to_ascii_uppercase();
    if n.contains("H100") || n.contains("H200") || n.contains("H800") || n.contains("H20") {
        Ok(Arch::Hopper)
    } else if n.contains("B100") || n.contains("B200") || n.contains("GB200") {
        Ok(Arch::Blackwell)
    } else {
        Err(format!(
            "{name}: not a GPU with confidential computing (Hopper or Blackwell)"
        ))
    }
}

/// NUL padding after the PEM chain NVML fills its buffer with, removed; the pinned root
/// appended when NVML's chain stops below it.
fn chain_text(bytes: &[u8]) -> Result<String, String> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| "the certificate chain is not PEM text".to_owned())?
        .to_owned();
    let certs = crate::x509::parse_certs(text.as_bytes()).map_err(|e| e.to_string())?;
    let root = Root::Device.cert();
    if certs.last().is_some_and(|c| c.der != root.der) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&root.der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        return Ok(format!(
            "{}\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            text.trim_end(),
            lines.join("\n")
        ));
    }
    Ok(text)
}

/// One evidence object per GPU, each report signed over `nonce`.
pub fn collect(nonce: [u8; 32]) -> crate::Result<Vec<GpuEvidence>> {
    // nvml-wrapper slices NVML's buffers by the sizes NVML returns; a driver returning a size
    // beyond its buffer would panic there: caught and reported instead.
    std::panic::catch_unwind(|| collect_inner(nonce))
        .unwrap_or_else(|_| Err("NVML returned an impossible buffer size".into()))
        .map_err(crate::Error::GpuCollection)
}

fn collect_inner(nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String> {
    let nvml = Nvml::init()
        .map_err(|e| format!("NVML unavailable ({e}): is NVIDIA's driver installed?"))?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    if count == 0 {
        return Err("NVML sees no GPU".into());
    }
    let mut out = Vec::new();
    for i in 0..count {
        let d = nvml
            .device_by_index(i)
            .map_err(|e| format!("GPU {i}: {e}"))?;
        let name = d.name().map_err(|e| format!("GPU {i} name: {e}"))?;
        let arch = arch_of(&name)?;
        // A GPU outside confidential-computing mode does not protect the work it is given:
        // refused here rather than bound into a key.
        if let Ok(false) = d.is_cc_enabled() {
            return Err(format!(
                "GPU {i} ({name}): confidential computing is off (see nvidia-smi conf-compute)"
            ));
        }
        let report = d
            .confidential_compute_gpu_attestation_report(nonce)
            .map_err(|e| format!("GPU {i} ({name}): attestation report: {e} (is the GPU in confidential-computing mode?)"))?;
        let certs = d
            .confidential_compute_gpu_certificate()
            .map_err(|e| format!("GPU {i} ({name}): certificate chain: {e}"))?;
        let parsed = GpuReport::parse(&report.attestation_report)
            .map_err(|e| format!("GPU {i} ({name}): {e}"))?;
        if parsed.nonce != nonce {
            return Err(format!(
                "GPU {i} ({name}): the report carries another nonce than the one asked for"
            ));
        }
        let chain = chain_text(&certs.attestation_cert_chain)
            .map_err(|e| format!("GPU {i} ({name}): {e}"))?;
        out.push(GpuEvidence::new(
            arch,
            nonce,
            &report.attestation_report,
            chain,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structures NVML fills, as nvml.h defines them: three counts, the 32-byte nonce,
    /// 8 KiB of report and 4 KiB of CEC report; two sizes, 4 KiB and 5 KiB of PEM chains.
    #[test]
    fn nvml_structure_layouts_match_nvml_h() {
        use nvml_wrapper_sys::bindings::*;
        assert_eq!(
            std::mem::size_of::<nvmlConfComputeGpuAttestationReport_t>(),
            3 * 4 + 32 + 0x2000 + 0x1000
        );
        assert_eq!(
            std::mem::offset_of!(nvmlConfComputeGpuAttestationReport_t, attestationReport),
            3 * 4 + 32
        );
        assert_eq!(
            std::mem::size_of::<nvmlConfComputeGpuCertificate_t>(),
            2 * 4 + 0x1000 + 0x1400
        );
        assert_eq!(
            std::mem::offset_of!(nvmlConfComputeGpuCertificate_t, attestationCertChain),
            2 * 4 + 0x1000
        );
    }

    #[test]
    fn without_nvidias_driver_collection_is_an_error_that_says_so() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: the device check exercises collection there
        }
        let e = collect([0; 32]).unwrap_err();
        assert!(
            e.to_string().contains("GPU evidence: NVML unavailable"),
            "{e}"
        );
        assert_eq!(
            status()["nvml"]
                .as_str()
                .map(|s| s.starts_with("unavailable")),
            Some(true)
        );
    }

    #[test]
    fn chains_are_completed_with_the_pinned_root() {
        let chain = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors/nvgpu/go-nvattest-tools-h100/test_gpu_attestation_certificate_chain.dat"),
        )
        .unwrap();
        let full = crate::x509::parse_certs(&chain).unwrap();
        let mut padded = chain.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(
            crate::x509::parse_certs(chain_text(&padded).unwrap().as_bytes())
                .unwrap()
                .len(),
            5
        );
        // Without its root (the first four certificates only).
        let text = String::from_utf8(chain).unwrap();
        let cut = text
            .match_indices("-----END CERTIFICATE-----")
            .nth(3)
            .unwrap()
            .0
            + 25;
        let completed = chain_text(&text.as_bytes()[..cut]).unwrap();
        let certs = crate::x509::parse_certs(completed.as_bytes()).unwrap();
        assert_eq!(certs.len(), 5);
        assert_eq!(certs[4].der, full[4].der);
    }
}
