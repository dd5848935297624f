//! Reading a model directory's pinned files into memory, hashing while reading.
//!
//! The files read are exactly the ones the loader uses: `config.json`, `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json` when present, and either
//! `model.safetensors` or `model.safetensors.index.json` with every shard its `weight_map`
//! names. Each file is read once into memory while its SHA-256 is computed; the verified
//! in-memory bytes are the only bytes handed out, so a file changed after hashing cannot reach
//! the model. Files are read in parallel.
//!
//! [`manifest_of`] hashes the same files streaming, in constant memory, for what needs only
//! the pin (`cocoon pin`, `cocoon verify --model`): nothing it reads is handed out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::pin::{Manifest, ManifestEntry, Pin, Sha256Digest, MANIFEST_FILE};

/// Model configuration (required).
pub const CONFIG: &str = "config.json";
/// Tokenizer (required).
pub const TOKENIZER: &str = "tokenizer.json";
/// Tokenizer configuration with the chat template (optional).
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Generation defaults such as EOS ids (optional).
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// Single-file weights.
pub const WEIGHTS: &str = "model.safetensors";
/// Index of sharded weights.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Read size: large enough for few syscalls, small enough to hash while still in cache.
const CHUNK: u64 = 1 << 20;

/// Called with the number of bytes just read, from any thread.
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Sync);

/// A model directory whose files were read and hashed; only verified bytes come out of it.
#[derive(Debug)]
pub struct PinnedModel {
    dir: PathBuf,
    manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
}

impl PinnedModel {
    /// Reads and hashes the model files of `dir` and checks them against `pin`.
    ///
    /// On mismatch the error names the changed file when the directory holds a manifest
    /// ([`MANIFEST_FILE`]) that the pin authenticates; otherwise it lists the hashes found.
    pub fn open(dir: &Path, pin: &Pin, progress: Option<ProgressFn<'_>>) -> Result<Self> {
        let model = Self::read(dir, progress)?;
        let actual = model.manifest.pin();
        if actual == *pin {
            return Ok(model);
        }
        if let Some(trusted) = trusted_manifest(dir, pin) {
            for e in model.manifest.entries() {
                match trusted.get(&e.path) {
                    Some(want) if *want == e.sha256 => {}
                    Some(want) => {
                        return Err(Error::PinMismatch {
                            file: e.path.clone(),
                            expected: hex::encode(want),
                            actual: hex::encode(e.sha256),
                        })
                    }
                    None => {
                        return Err(Error::PinMismatch {
                            file: e.path.clone(),
                            expected: "(not in the pinned manifest)".into(),
                            actual: hex::encode(e.sha256),
                        })
                    }
                }
            }
            if let Some(gone) = trusted
                .entries()
                .iter()
                .find(|t| model.manifest.get(&t.path).is_none())
            {
                return Err(Error::PinMismatch {
                    file: gone.path.clone(),
                    expected: hex::encode(gone.sha256),
                    actual: "(not read: the loader does not use it here)".into(),
                });
            }
        }
        Err(Error::ModelPinMismatch {
            dir: dir.to_owned(),
            expected: pin.to_hex(),
            actual: actual.to_hex(),
            manifest: model.manifest.text(),
        })
    }

    /// Reads and hashes the model files of `dir` without checking a pin. To learn only the pin,
    /// [`manifest_of`] does the same without holding the files.
    pub fn read(dir: &Path, progress: Option<ProgressFn<'_>>) -> Result<Self> {
        let (manifest, files) = scan(dir, progress, true)?;
        Ok(PinnedModel {
            dir: dir.to_owned(),
            manifest,
            files,
        })
    }

    /// The directory the model was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest of the files read.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The pin of the files read.
    pub fn pin(&self) -> Pin {
        self.manifest.pin()
    }

    /// The verified bytes of a pinned file, by relative path.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The verified bytes of a required file, or an error naming it.
    pub fn required(&self, path: &str) -> Result<&[u8]> {
        self.file(path).ok_or_else(|| Error::MissingFile {
            path: self.dir.join(path),
            why: "not among the pinned files".into(),
        })
    }

    /// Total bytes read.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|b| b.len() as u64).sum()
    }

    /// Takes the bytes of a file out of the model (to convert them without a second copy).
    pub fn take_file(&mut self, path: &str) -> Option<Vec<u8>> {
        self.files.remove(path)
    }
}

/// The manifest of the files the loader would read from `dir` (the same files, checks and
/// errors as [`PinnedModel::read`]), hashed streaming in constant memory.
pub fn manifest_of(dir: &Path, progress: Option<ProgressFn<'_>>) -> Result<Manifest> {
    Ok(scan(dir, progress, false)?.0)
}

type Files = BTreeMap<String, Vec<u8>>;

/// Hashes the loader's files; keeps their bytes when `keep` (the shard index is always kept).
fn scan(dir: &Path, progress: Option<ProgressFn<'_>>, keep: bool) -> Result<(Manifest, Files)> {
    let root = dir.canonicalize().map_err(|source| Error::Io {
        path: dir.to_owned(),
        error: source,
    })?;
    if !root.is_dir() {
        return Err(Error::Io {
            path: dir.to_owned(),
            error: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut first = vec![CONFIG.to_owned(), TOKENIZER.to_owned()];
    for optional in [TOKENIZER_CONFIG, GENERATION_CONFIG] {
        if root.join(optional).symlink_metadata().is_ok() {
            first.push(optional.to_owned());
        }
    }
    let sharded = root.join(WEIGHTS_INDEX).symlink_metadata().is_ok();
    first.push(if sharded { WEIGHTS_INDEX } else { WEIGHTS }.to_owned());

    let mut files = read_all(&root, dir, &first, progress, keep)?;
    if sharded {
        let shards = shard_names(&files[WEIGHTS_INDEX].1)?;
        files.extend(read_all(&root, dir, &shards, progress, keep)?);
    }
    let manifest = Manifest::new(
        files
            .iter()
            .map(|(path, (sha256, _))| ManifestEntry {
                path: path.clone(),
                sha256: *sha256,
            })
            .collect(),
    );
    let files = files
        .into_iter()
        .map(|(k, (_, bytes))| (k, bytes))
        .collect();
    Ok((manifest, files))
}

/// The manifest kept in the directory, if present, a regular file of at most 1 MiB,
/// parseable and authenticated by `pin`.
fn trusted_manifest(dir: &Path, pin: &Pin) -> Option<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let meta = path.metadata().ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let manifest = Manifest::parse(&text).ok()?;
    (manifest.pin() == *pin).then_some(manifest)
}

/// Shard file names from a safetensors index's `weight_map`, deduplicated and checked.
fn shard_names(index: &[u8]) -> Result<Vec<String>> {
    let bad = |m: &str| Error::format(WEIGHTS_INDEX, m.to_owned());
    let value: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object"))?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(&format!("weight_map[{tensor:?}] is not a file name")))?;
        shards.insert(file.to_owned());
    }
    if shards.is_empty() {
        return Err(bad("`weight_map` is empty"));
    }
    Ok(shards.into_iter().collect())
}

/// Refuses names a `sha256sum` manifest cannot carry verbatim or that leave the directory.
fn check_relative(shown: &Path, name: &str) -> Result<()> {
    let refuse = |reason| Error::RefusedPath {
        path: shown.join(name),
        reason,
    };
    if name.contains('\n') || name.contains('\r') {
        return Err(refuse("path contains a newline"));
    }
    if name.contains('\\') {
        return Err(refuse("path contains a backslash"));
    }
    if name.is_empty()
        || Path::new(name)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(refuse(
            "path must be relative and stay inside the model directory",
        ));
    }
    Ok(())
}

type ReadFiles = BTreeMap<String, (Sha256Digest, Vec<u8>)>;

fn read_all(
    root: &Path,
    shown: &Path,
    names: &[String],
    progress: Option<ProgressFn<'_>>,
    keep: bool,
) -> Result<ReadFiles> {
    names.iter().try_for_each(|n| check_relative(shown, n))?;
    names
        .par_iter()
        .map(|name| {
            let keep = keep || name == WEIGHTS_INDEX;
            let (digest, bytes) = read_hashed(root, shown, name, progress, keep)?;
            Ok((name.clone(), (digest, bytes)))
        })
        .collect()
}

/// Opens `root/name` refusing anything that is not a regular file inside `root`, then reads
/// it to the end, hashing each chunk as it lands in the buffer; returns the bytes when `keep`,
/// else nothing (one chunk of memory).
fn read_hashed(
    root: &Path,
    shown: &Path,
    name: &str,
    progress: Option<ProgressFn<'_>>,
    keep: bool,
) -> Result<(Sha256Digest, Vec<u8>)> {
    let path = root.join(name);
    let io = |source| Error::Io {
        path: shown.join(name),
        error: source,
    };
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingFile {
                path: shown.join(name),
                why: why_needed(name),
            })
        }
        Err(e) => return Err(io(e)),
    };
    // Links anywhere on the way (the file itself or a directory of a shard's path) must stay
    // inside the model directory.
    let target = path.canonicalize().map_err(io)?;
    if !target.starts_with(root) {
        return Err(Error::RefusedPath {
            path: shown.join(name),
            reason: if meta.file_type().is_symlink() {
                "symbolic link pointing outside the model directory"
            } else {
                "path leads outside the model directory through a linked directory"
            },
        });
    }
    // Opening a FIFO would wait for a writer forever: only regular files are opened.
    if !target.metadata().map_err(io)?.is_file() {
        return Err(Error::RefusedPath {
            path: shown.join(name),
            reason: "not a regular file",
        });
    }
    let mut file = File::open(&target).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::RefusedPath {
            path: shown.join(name),
            reason: "not a regular file",
        });
    }
    let capacity = if keep { meta.len() } else { CHUNK };
    let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut hasher = Sha256::new();
    loop {
        if !keep {
            bytes.clear();
        }
        let start = bytes.len();
        let n = (&mut file)
            .take(CHUNK)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&bytes[start..]);
        if let Some(p) = progress {
            p(n as u64);
        }
    }
    if !keep {
        bytes = Vec::new();
    }
    Ok((hasher.finalize().into(), bytes))
}

fn why_needed(name: &str) -> String {
    match name {
        CONFIG => "every model needs its config.json".into(),
        TOKENIZER => "every model needs its tokenizer.json".into(),
        WEIGHTS => format!("weights are read from {WEIGHTS} or the shards of {WEIGHTS_INDEX}"),
        _ => format!("listed in {WEIGHTS_INDEX}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(d.path().join(name), bytes).unwrap();
        }
        d
    }

    #[test]
    fn reads_exactly_the_loader_files() {
        let d = dir_with(&[
            (CONFIG, b"{}"),
            (TOKENIZER, b"{}"),
            (WEIGHTS, b"w"),
            ("README.md", b"not pinned"),
            (GENERATION_CONFIG, b"{}"),
        ]);
        let m = PinnedModel::read(d.path(), None).unwrap();
        let paths: Vec<_> = m
            .manifest()
            .entries()
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(paths, [CONFIG, GENERATION_CONFIG, WEIGHTS, TOKENIZER]);
        assert_eq!(m.file(WEIGHTS), Some(&b"w"[..]));
    }

    #[test]
    fn sharded_models_pin_the_index_and_every_shard() {
        let index = br#"{"weight_map":{"a":"s-1.safetensors","b":"s-2.safetensors","c":"s-1.safetensors"}}"#;
        let d = dir_with(&[
            (CONFIG, b"{}"),
            (TOKENIZER, b"{}"),
            (WEIGHTS_INDEX, index),
            ("s-1.safetensors", b"1"),
            ("s-2.safetensors", b"2"),
        ]);
        let m = PinnedModel::read(d.path(), None).unwrap();
        assert_eq!(m.manifest().entries().len(), 5);
        std::fs::remove_file(d.path().join("s-2.safetensors")).unwrap();
        let err = PinnedModel::read(d.path(), None).unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("s-2.safetensors"), "{err}");
        let err = manifest_of(d.path(), None).unwrap_err();
        assert!(err.to_string().contains("s-2.safetensors"), "{err}");
    }

    #[test]
    fn streaming_hashes_equal_the_read_ones() {
        // Several chunks and a partial last one, so that the reused buffer is exercised.
        let big: Vec<u8> = (0..(2 * CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let index = br#"{"weight_map":{"a":"s-1.safetensors","b":"s-2.safetensors"}}"#;
        let single = dir_with(&[(CONFIG, b"{}"), (TOKENIZER, b"{}"), (WEIGHTS, &big)]);
        let sharded = dir_with(&[
            (CONFIG, b"{}"),
            (TOKENIZER, b"{}"),
            (WEIGHTS_INDEX, index),
            ("s-1.safetensors", &big),
            ("s-2.safetensors", b"2"),
        ]);
        for d in [&single, &sharded] {
            let read = PinnedModel::read(d.path(), None).unwrap();
            let streamed = manifest_of(d.path(), None).unwrap();
            assert_eq!(streamed.text(), read.manifest().text());
        }
        let want: [u8; 32] = Sha256::digest(&big).into();
        let streamed = manifest_of(single.path(), None).unwrap();
        assert_eq!(streamed.get(WEIGHTS), Some(&want));
    }

    #[test]
    fn shard_names_must_stay_inside() {
        for bad in ["../x.safetensors", "/etc/passwd", "a\nb", "a\\b", ""] {
            let index = serde_json::json!({"weight_map": {"t": bad}}).to_string();
            let d = dir_with(&[
                (CONFIG, b"{}"),
                (TOKENIZER, b"{}"),
                (WEIGHTS_INDEX, index.as_bytes()),
            ]);
            let err = PinnedModel::read(d.path(), None).unwrap_err();
            assert!(matches!(err, Error::RefusedPath { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn flipped_byte_is_named_with_a_trusted_manifest() {
        let d = dir_with(&[(CONFIG, b"{}"), (TOKENIZER, b"{}"), (WEIGHTS, b"weights")]);
        let m = PinnedModel::read(d.path(), None).unwrap();
        let pin = m.pin();
        std::fs::write(d.path().join(WEIGHTS), b"weightz").unwrap();
        let err = PinnedModel::open(d.path(), &pin, None).unwrap_err();
        assert!(matches!(err, Error::ModelPinMismatch { .. }), "{err}");
        std::fs::write(d.path().join(MANIFEST_FILE), m.manifest().text()).unwrap();
        match PinnedModel::open(d.path(), &pin, None).unwrap_err() {
            Error::PinMismatch {
                file,
                expected,
                actual,
            } => {
                assert_eq!(file, WEIGHTS);
                assert_eq!(expected, hex::encode(Sha256::digest(b"weights")));
                assert_eq!(actual, hex::encode(Sha256::digest(b"weightz")));
            }
            other => panic!("{other}"),
        }
    }
}
