//! Reading an input file whose content is not trusted (evidence, collateral, policies,
//! receipts, prompts): only a regular file (a FIFO or a device would block or never end) and
//! at most a stated number of bytes, checked before anything is parsed.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest evidence or collateral file read (a TDX quote with its chain is about 5 KiB, DCAP
/// collateral about 20 KiB).
pub const MAX_EVIDENCE_BYTES: u64 = 16 << 20;
/// Largest policy file read.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;
/// Largest receipt file read.
pub const MAX_RECEIPT_BYTES: u64 = 16 << 20;

/// The bytes of the regular file `path`, refusing anything else and anything over `limit`.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        error: source,
    };
    let refuse = |why: String| Error::Io {
        path: path.to_owned(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    };
    let meta = path.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.len() > limit {
        return Err(refuse(format!(
            "{} bytes, more than the {limit} allowed",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(refuse(format!("more than the {limit} bytes allowed")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_bounded(&f, 5).unwrap(), b"hello");
        let err = read_bounded(&f, 4).unwrap_err().to_string();
        assert!(err.contains("more than the 4 allowed"), "{err}");
        let err = read_bounded(dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_bounded(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
