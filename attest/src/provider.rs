//! Producing evidence over given report data, and choosing the interface.

use std::path::Path;

use crate::configfs::ConfigfsTsm;
use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform};

/// Something that makes evidence binding 64 bytes of report data.
pub trait EvidenceProvider: Send + Sync {
    /// The platform of the evidence it makes.
    fn platform(&self) -> Platform;
    /// Evidence whose report data is `report_data`.
    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence>;
}

/// The configfs-tsm root on Linux.
pub const CONFIGFS_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// What `--attest auto` finds under `root` (normally [`CONFIGFS_TSM_ROOT`]): configfs-tsm with
/// a TDX or SNP provider, else the SEV-SNP guest device `/dev/sev-guest` (older kernels).
pub fn auto(root: &Path) -> Result<Box<dyn EvidenceProvider>> {
    if root.is_dir() {
        let tsm = ConfigfsTsm::probe(root)?;
        return Ok(Box::new(tsm));
    }
    let device = Path::new(crate::sev_guest::DEVICE);
    if device.exists() {
        return Ok(Box::new(crate::sev_guest::SevGuest::open(device)?));
    }
    Err(Error::NoTee {
        looked_for: format!(
            "configfs-tsm at {}, {}",
            root.display(),
            crate::sev_guest::DEVICE
        ),
    })
}

/// The provider for `--attest KIND`: `auto` (whatever [`auto`] finds), `tdx` or `snp` (the same,
/// refusing the other platform) or `dev` (the insecure stand-in). `none` is not a provider.
pub fn select(kind: &str) -> Result<Box<dyn EvidenceProvider>> {
    match kind {
        "dev" => Ok(Box::new(crate::dev::DevProvider::new())),
        "auto" | "tdx" | "snp" => {
            let p = auto(Path::new(CONFIGFS_TSM_ROOT))?;
            if kind != "auto" && p.platform().as_str() != kind {
                return Err(Error::Selection(format!(
                    "{kind} evidence asked for, this machine provides {}",
                    p.platform()
                )));
            }
            Ok(p)
        }
        other => Err(Error::Selection(format!(
            "unknown evidence kind {other:?} (auto, tdx, snp, dev)"
        ))),
    }
}
