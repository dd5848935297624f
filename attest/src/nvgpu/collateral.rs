//! GPU collateral: a directory of RIMs (`*.xml`, `*.swidtag`) and OCSP responses (any other
//! file but `*.req` requests: DER, or base64 of DER), read once and checked once (RIM signatures), then used for
//! any number of reports.

use std::path::Path;

use super::chain::SigMemo;
use super::ocsp::Ocsp;
use super::rim::Rim;
use crate::error::{Error, Result};
use crate::input::{read_bounded, MAX_EVIDENCE_BYTES};

/// Most files read from a collateral directory.
pub const MAX_FILES: usize = 256;

/// What a collateral directory holds; a file that could not be used is kept with the reason,
/// which any verdict relying on the directory then reports.
#[derive(Clone, Debug, Default)]
pub struct GpuCollateral {
    /// RIMs whose XML signature verified, or why not, by file name.
    pub rims: Vec<(String, std::result::Result<Rim, String>)>,
    /// OCSP responses, or why a file is not one, by file name.
    pub ocsp: Vec<(String, std::result::Result<Ocsp, String>)>,
    /// Signatures already verified for this collateral and the chains checked with it.
    pub memo: SigMemo,
}

impl GpuCollateral {
    /// From files' names and bytes.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Self {
        let mut c = GpuCollateral::default();
        for (name, bytes) in files {
            let lower = name.to_ascii_lowercase();
            if lower.ends_with(".xml") || lower.ends_with(".swidtag") {
                c.rims
                    .push((name, Rim::parse(&bytes).map_err(|e| e.to_string())));
            } else {
                c.ocsp
                    .push((name, Ocsp::parse(&bytes).map_err(|e| e.to_string())));
            }
        }
        c
    }

    /// Reads `dir` and its immediate subdirectories (hidden entries skipped).
    pub fn read(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut dirs = vec![(dir.to_owned(), 0)];
        while let Some((d, depth)) = dirs.pop() {
            let entries = std::fs::read_dir(&d).map_err(|source| Error::Io {
                path: d.clone(),
                error: source,
            })?;
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let name = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                // Hidden entries, and the OCSP requests `cocoon collateral` writes, are not
                // collateral.
                if p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with('.') || n.ends_with(".req")
                }) {
                    continue;
                }
                if p.is_dir() {
                    if depth == 0 {
                        dirs.push((p, 1));
                    }
                    continue;
                }
                if files.len() == MAX_FILES {
                    return Err(Error::Selection(format!(
                        "{}: more than the {MAX_FILES} collateral files read",
                        dir.display()
                    )));
                }
                files.push((name, read_bounded(&p, MAX_EVIDENCE_BYTES)?));
            }
        }
        Ok(GpuCollateral::from_files(files))
    }
}
