//! Linux configfs-tsm: one report entry per request.
//!
//! Sequence (Documentation/ABI/testing/configfs-tsm): create `<root>/<entry>`, write the 64
//! bytes of report data to `inblob`, read `generation`, read `outblob` (and `auxblob`, the
//! certificates, when present), read `provider`, read `generation` again — a change means
//! another writer raced us and the report may not be ours — and remove the entry.
//!
//! The file operations go through [`ReportFs`] so that tests can drive the same sequence over a
//! temporary directory that behaves like the kernel's (the kernel interface cannot exist there).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::evidence::{Evidence, Platform};
use crate::provider::EvidenceProvider;

/// The file operations configfs-tsm needs.
pub trait ReportFs: Send + Sync {
    /// Creates a report entry (a directory; the kernel fills in its attribute files).
    fn create_entry(&self, path: &Path) -> std::io::Result<()>;
    /// Writes an attribute.
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Reads an attribute.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Removes a report entry.
    fn remove_entry(&self, path: &Path) -> std::io::Result<()>;
}

/// The real kernel interface through `std::fs`.
#[derive(Debug, Default)]
pub struct KernelFs;

impl ReportFs for KernelFs {
    fn create_entry(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, bytes)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_entry(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// Evidence through configfs-tsm.
pub struct ConfigfsTsm {
    root: PathBuf,
    platform: Platform,
    fs: Box<dyn ReportFs>,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The platform a configfs-tsm `provider` names.
pub fn platform_of(provider: &str) -> Result<Platform> {
    match provider {
        "tdx_guest" => Ok(Platform::Tdx),
        "sev_guest" => Ok(Platform::Snp),
        other => Err(Error::Provider {
            found: other.to_owned(),
            why: "not a known provider (tdx_guest, sev_guest)",
        }),
    }
}

impl ConfigfsTsm {
    /// Finds out which platform the kernel's configfs-tsm at `root` serves.
    pub fn probe(root: &Path) -> Result<Self> {
        Self::probe_with(root, Box::new(KernelFs))
    }

    /// [`ConfigfsTsm::probe`] through the given file operations.
    pub fn probe_with(root: &Path, fs: Box<dyn ReportFs>) -> Result<Self> {
        let entry = new_entry(root);
        fs.create_entry(&entry).map_err(|source| Error::Io {
            path: entry.clone(),
            error: source,
        })?;
        let provider = read_text(fs.as_ref(), &entry.join("provider"));
        let _ = fs.remove_entry(&entry);
        let platform = platform_of(&provider?)?;
        Ok(ConfigfsTsm {
            root: root.to_owned(),
            platform,
            fs,
        })
    }

    fn report(&self, entry: &Path, report_data: &[u8; 64]) -> Result<Evidence> {
        let fs = self.fs.as_ref();
        let io = |path: PathBuf| {
            move |source| Error::Io {
                path,
                error: source,
            }
        };
        fs.write(&entry.join("inblob"), report_data)
            .map_err(io(entry.join("inblob")))?;
        let before = read_generation(fs, entry)?;
        let quote = fs
            .read(&entry.join("outblob"))
            .map_err(io(entry.join("outblob")))?;
        let certs = match fs.read(&entry.join("auxblob")) {
            Ok(b) if !b.is_empty() => Some(b),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(entry.join("auxblob"))(e)),
        };
        let provider = read_text(fs, &entry.join("provider"))?;
        let after = read_generation(fs, entry)?;
        if before != after {
            return Err(Error::GenerationChanged { before, after });
        }
        let platform = platform_of(&provider)?;
        if platform != self.platform {
            return Err(Error::Provider {
                found: provider,
                why: "changed since the interface was probed",
            });
        }
        let evidence = Evidence {
            platform,
            quote,
            certs,
            provider: "configfs-tsm".into(),
        };
        if evidence.report_data()? != *report_data {
            return Err(Error::Malformed {
                platform: platform.as_str(),
                message: "the report does not carry the report data written to inblob".into(),
            });
        }
        Ok(evidence)
    }
}

impl EvidenceProvider for ConfigfsTsm {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<Evidence> {
        let entry = new_entry(&self.root);
        self.fs.create_entry(&entry).map_err(|source| Error::Io {
            path: entry.clone(),
            error: source,
        })?;
        let result = self.report(&entry, report_data);
        let removed = self.fs.remove_entry(&entry);
        let evidence = result?;
        removed.map_err(|source| Error::Io {
            path: entry,
            error: source,
        })?;
        Ok(evidence)
    }
}

fn new_entry(root: &Path) -> PathBuf {
    let n = ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed);
    root.join(format!("cocoon-{}-{n}", std::process::id()))
}

fn read_text(fs: &dyn ReportFs, path: &Path) -> Result<String> {
    let bytes = fs.read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        error: source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

fn read_generation(fs: &dyn ReportFs, entry: &Path) -> Result<u64> {
    let path = entry.join("generation");
    let text = read_text(fs, &path)?;
    text.parse().map_err(|_| Error::Io {
        path,
        error: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("generation {text:?} is not a number"),
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::evidence::{SNP_REPORT_DATA_OFFSET, SNP_REPORT_LEN, TDX_REPORT_DATA_OFFSET};
    use std::sync::atomic::AtomicBool;

    /// A temporary directory behaving like configfs-tsm: creating an entry fills in `provider`
    /// and `generation`; writing `inblob` bumps the generation and produces an `outblob` that
    /// carries the report data where the platform's format puts it, and an `auxblob`.
    pub(crate) struct FakeTsm {
        pub provider: Option<&'static str>,
        pub race: AtomicBool,
    }

    impl ReportFs for FakeTsm {
        fn create_entry(&self, path: &Path) -> std::io::Result<()> {
            std::fs::create_dir(path)?;
            if let Some(p) = self.provider {
                std::fs::write(path.join("provider"), format!("{p}\n"))?;
            }
            std::fs::write(path.join("generation"), "0\n")
        }
        fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            std::fs::write(path, bytes)?;
            let dir = path.parent().unwrap();
            let g: u64 = std::fs::read_to_string(dir.join("generation"))?
                .trim()
                .parse()
                .unwrap();
            std::fs::write(dir.join("generation"), format!("{}\n", g + 1))?;
            let (len, at) = match self.provider {
                Some("tdx_guest") => (TDX_REPORT_DATA_OFFSET + 64 + 1000, TDX_REPORT_DATA_OFFSET),
                _ => (SNP_REPORT_LEN, SNP_REPORT_DATA_OFFSET),
            };
            let mut out = vec![0xAB; len];
            out[..2].copy_from_slice(&[4, 0]); // TDX quote version 4 (ignored for SNP here)
            out[at..at + 64].copy_from_slice(bytes);
            std::fs::write(dir.join("outblob"), out)?;
            std::fs::write(dir.join("auxblob"), b"certs")
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            if path.ends_with("outblob") && self.race.load(Ordering::Relaxed) {
                // Another writer sneaks in between our generation reads.
                let dir = path.parent().unwrap();
                std::fs::write(dir.join("generation"), "99\n")?;
            }
            std::fs::read(path)
        }
        fn remove_entry(&self, path: &Path) -> std::io::Result<()> {
            std::fs::remove_dir_all(path)
        }
    }

    fn fake(provider: Option<&'static str>) -> Box<FakeTsm> {
        Box::new(FakeTsm {
            provider,
            race: AtomicBool::new(false),
        })
    }

    #[test]
    fn tdx_and_snp_reports_carry_the_report_data_and_entries_are_removed() {
        for (provider, platform) in [("tdx_guest", Platform::Tdx), ("sev_guest", Platform::Snp)] {
            let root = tempfile::tempdir().unwrap();
            let tsm = ConfigfsTsm::probe_with(root.path(), fake(Some(provider))).unwrap();
            assert_eq!(tsm.platform(), platform);
            let data = [7u8; 64];
            let ev = tsm.attest(&data).unwrap();
            assert_eq!((ev.platform, ev.report_data().unwrap()), (platform, data));
            assert_eq!(ev.certs.as_deref(), Some(&b"certs"[..]));
            assert_eq!(
                std::fs::read_dir(root.path()).unwrap().count(),
                0,
                "entry left behind"
            );
        }
    }

    #[test]
    fn a_changed_generation_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let tsm = ConfigfsTsm::probe_with(root.path(), fake(Some("sev_guest"))).unwrap();
        let f = FakeTsm {
            provider: Some("sev_guest"),
            race: AtomicBool::new(true),
        };
        let racing = ConfigfsTsm {
            root: root.path().to_owned(),
            platform: tsm.platform,
            fs: Box::new(f),
        };
        let e = racing.attest(&[1; 64]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::GenerationChanged {
                    before: 1,
                    after: 99
                }
            ),
            "{e}"
        );
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "entry left behind"
        );
    }

    #[test]
    fn missing_or_unknown_providers_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let e = ConfigfsTsm::probe_with(root.path(), fake(None))
            .err()
            .unwrap();
        assert!(e.to_string().contains("provider"), "{e}");
        let e = ConfigfsTsm::probe_with(root.path(), fake(Some("arm_cca_guest")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("arm_cca_guest"), "{e}");
    }
}
