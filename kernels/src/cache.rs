//! The on-disk cubin cache.
//!
//! A cubin is stored under a key that hashes everything its bytes depend on: the program text
//! (prelude + source), the architecture, the compile options, and the NVRTC and driver
//! versions. The file holds the SHA-256 of the cubin followed by the cubin; a file whose hash
//! does not match (truncated, corrupted, tampered with) is ignored and compiled again, so the
//! bytes loaded are always the bytes hashed.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::nvrtc::{options_for, Arch, KernelOptions};
use crate::source::Source;

/// A directory of compiled kernels.
#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KernelCache { dir: dir.into() }
    }

    /// The default place: `$COCOON_KERNEL_CACHE`, else `$XDG_CACHE_HOME/cocoon/kernels`, else
    /// `$HOME/.cache/cocoon/kernels`; `None` if none of these is set.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("COCOON_KERNEL_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("cocoon/kernels")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/cocoon/kernels")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `source` compiled for `arch` under `kernel` options by NVRTC `nvrtc` for
    /// driver `driver`.
    pub fn key(
        source: &Source,
        arch: Arch,
        kernel: KernelOptions,
        nvrtc: (i32, i32),
        driver: i32,
    ) -> String {
        let mut h = Sha256::new();
        h.update(source.program().as_bytes());
        h.update(format!(
            "\0{arch}\0{}\0nvrtc {}.{}\0driver {driver}",
            options_for(arch, kernel).join(" "),
            nvrtc.0,
            nvrtc.1
        ));
        let stem = source.file.trim_end_matches(".cu");
        format!("{stem}-{arch}-{}", &hex::encode(h.finalize())[..32])
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cubin"))
    }

    /// The cubin stored under `key`, if present and intact.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path(key)).ok()?;
        if bytes.len() <= 32 {
            return None;
        }
        let (digest, cubin) = bytes.split_at(32);
        (Sha256::digest(cubin).as_slice() == digest).then(|| cubin.to_vec())
    }

    /// Stores `cubin` under `key` (write to a temporary file, then rename: readers never see
    /// a partial file).
    pub fn put(&self, key: &str, cubin: &[u8]) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Cache { path, error }
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!("{key}.{}.tmp", std::process::id()));
        let mut data = Sha256::digest(cubin).to_vec();
        data.extend_from_slice(cubin);
        fs::write(&tmp, &data).map_err(io(&tmp))?;
        let dst = self.path(key);
        fs::rename(&tmp, &dst).map_err(io(&dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SOURCES;

    #[test]
    fn stores_and_returns_intact_cubins_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path().join("k"));
        let key = KernelCache::key(
            &SOURCES[0],
            Arch::SM90,
            KernelOptions::default(),
            (13, 0),
            13000,
        );
        assert!(cache.get(&key).is_none());
        cache.put(&key, b"\x7fELF cubin").unwrap();
        assert_eq!(cache.get(&key).unwrap(), b"\x7fELF cubin");

        // Flip one byte of the stored cubin: the entry is ignored.
        let path = cache.path(&key);
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(cache.get(&key).is_none());
        // Truncated to the digest alone.
        fs::write(&path, &bytes[..32]).unwrap();
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn the_key_depends_on_every_input() {
        let base = KernelCache::key(
            &SOURCES[0],
            Arch::SM90,
            KernelOptions::default(),
            (13, 0),
            13000,
        );
        assert!(base.starts_with("embedding-sm_90-"));
        assert_eq!(
            base,
            KernelCache::key(
                &SOURCES[0],
                Arch::SM90,
                KernelOptions::default(),
                (13, 0),
                13000
            )
        );
        for other in [
            KernelCache::key(
                &SOURCES[1],
                Arch::SM90,
                KernelOptions::default(),
                (13, 0),
                13000,
            ),
            KernelCache::key(
                &SOURCES[0],
                Arch::SM80,
                KernelOptions::default(),
                (13, 0),
                13000,
            ),
            KernelCache::key(
                &SOURCES[0],
                Arch::SM90,
                KernelOptions::default(),
                (13, 1),
                13000,
            ),
            KernelCache::key(
                &SOURCES[0],
                Arch::SM90,
                KernelOptions::default(),
                (13, 0),
                13010,
            ),
            KernelCache::key(
                &SOURCES[0],
                Arch::SM90,
                KernelOptions {
                    no_weight_prefetch: true,
                },
                (13, 0),
                13000,
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_cache_that_cannot_be_created_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let cache = KernelCache::new(file.join("sub"));
        assert!(matches!(cache.put("k", b"c"), Err(Error::Cache { .. })));
    }
}
