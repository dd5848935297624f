//! The pin: a SHA-256 over the `sha256sum` manifest of exactly the files the loader reads.
//!
//! The manifest is `<64 lowercase hex><2 spaces><relative path>\n` per file, sorted by path
//! bytewise, so `cd DIR && sha256sum FILES | LC_ALL=C sort -k2 | sha256sum` reproduces the pin.
//! Because the pin is the manifest's own hash, a copy of the manifest kept beside the model
//! ([`MANIFEST_FILE`]) is authenticated by the pin alone and tells which file changed.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Name of the optional manifest copy kept in a model directory (not itself pinned).
pub const MANIFEST_FILE: &str = "cocoon.sha256";

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// The pin of a model: SHA-256 of its manifest text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub Sha256Digest);

impl Pin {
    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl FromStr for Pin {
    type Err = Error;

    /// Parses 64 hexadecimal characters (either case).
    fn from_str(s: &str) -> Result<Self> {
        let mut digest = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut digest).is_err() {
            return Err(Error::MalformedPin(s.chars().take(80).collect()));
        }
        Ok(Pin(digest))
    }
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Path relative to the model directory, `/`-separated.
    pub path: String,
    /// SHA-256 of the file's bytes.
    pub sha256: Sha256Digest,
}

/// The sorted list of pinned files and their hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Builds a manifest, sorting the entries by path bytes.
    pub fn new(mut entries: Vec<ManifestEntry>) -> Self {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Manifest { entries }
    }

    /// Entries, sorted by path bytes.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// The hash listed for `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Sha256Digest> {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| &e.sha256)
    }

    /// The manifest text exactly as `sha256sum` prints it, sorted.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.entries.len() * 100);
        for e in &self.entries {
            out.push_str(&hex::encode(e.sha256));
            out.push_str("  ");
            out.push_str(&e.path);
            out.push('\n');
        }
        out
    }

    /// The pin: SHA-256 of [`Manifest::text`].
    pub fn pin(&self) -> Pin {
        Pin(Sha256::digest(self.text().as_bytes()).into())
    }

    /// Parses `sha256sum` output (text mode; a `*` binary marker is accepted). Paths that
    /// `sha256sum` would escape (newline, backslash) are refused.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            |line: usize, why: &str| Error::format(MANIFEST_FILE, format!("line {line}: {why}"));
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let (hash, rest) = line
                .split_once(' ')
                .ok_or_else(|| bad(i + 1, "expected `<sha256>  <path>`"))?;
            let path = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('*'))
                .ok_or_else(|| bad(i + 1, "expected two spaces after the hash"))?;
            let mut sha256 = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut sha256).is_err() {
                return Err(bad(i + 1, "hash is not 64 hexadecimal characters"));
            }
            if path.is_empty() || path.contains('\\') {
                return Err(bad(i + 1, "empty or escaped path"));
            }
            entries.push(ManifestEntry {
                path: path.to_owned(),
                sha256,
            });
        }
        Ok(Manifest::new(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_parses_hex_of_either_case_and_refuses_the_rest() {
        let lower = "ab".repeat(32);
        let pin: Pin = lower.parse().unwrap();
        assert_eq!(pin.to_hex(), lower);
        assert_eq!("AB".repeat(32).parse::<Pin>().unwrap(), pin);
        for bad in [
            "",
            "ab",
            &"ab".repeat(33),
            &"zz".repeat(32),
            &format!("{} ", "ab".repeat(32)),
        ] {
            assert!(
                matches!(bad.parse::<Pin>(), Err(Error::MalformedPin(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn manifest_text_is_sha256sum_format_sorted_bytewise() {
        let m = Manifest::new(vec![
            ManifestEntry {
                path: "b".into(),
                sha256: [1; 32],
            },
            ManifestEntry {
                path: "B".into(),
                sha256: [2; 32],
            },
            ManifestEntry {
                path: "a.json".into(),
                sha256: [3; 32],
            },
        ]);
        let text = m.text();
        let paths: Vec<_> = text.lines().map(|l| &l[66..]).collect();
        assert_eq!(paths, ["B", "a.json", "b"]);
        assert_eq!(&text[64..66], "  ");
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        // The pin is the SHA-256 of the text, as `sha256sum | sha256sum` computes it.
        assert_eq!(m.pin().0, <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn manifest_parse_refuses_garbage() {
        for bad in [
            "nohash",
            "abc  file",
            &format!("{}  ", "00".repeat(32)),
            &format!("{} x", "00".repeat(32)),
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
