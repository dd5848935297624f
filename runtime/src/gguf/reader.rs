//! The GGUF container (versions 2 and 3): header, metadata and tensor directory, read from
//! untrusted bytes with every length checked before use.

use std::collections::BTreeMap;

use super::dequant::GgmlType;
use super::err;
use crate::error::Result;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bound on the elements of all metadata arrays together (the largest vocabularies hold
/// a few hundred thousand tokens, in three arrays, plus their merges).
const MAX_META_ELEMENTS: u64 = 1 << 23;

/// Upper bound on counts read from the file, so that a corrupt count cannot reserve memory.
const MAX_COUNT: u64 = 1 << 28;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `FLOAT32` or `FLOAT64`.
    F64(f64),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    Str(String),
    /// `ARRAY`.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// As an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// As a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// Tensor name (`blk.0.attn_q.weight`…).
    pub name: String,
    /// Dimensions, innermost first (GGML order: `[columns, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

impl GgufTensor {
    /// Element count.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file borrowing its bytes.
#[derive(Debug)]
pub struct GgufFile<'a> {
    /// Format version.
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensor directory, in file order.
    pub tensors: Vec<GgufTensor>,
    bytes: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Elements of the metadata arrays read so far.
    elements: u64,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                err(format!(
                    "truncated: {what} at byte {} needs {n} bytes",
                    self.pos
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn count(&mut self, what: &str) -> Result<u64> {
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(err(format!("{what} {n} is implausibly large")));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u8) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U64(u64::from(self.array::<1>(key)?[0])),
            1 => MetaValue::I64(i64::from(self.array::<1>(key)?[0] as i8)),
            2 => MetaValue::U64(u64::from(u16::from_le_bytes(self.array(key)?))),
            3 => MetaValue::I64(i64::from(i16::from_le_bytes(self.array(key)?))),
            4 => MetaValue::U64(u64::from(self.u32(key)?)),
            5 => MetaValue::I64(i64::from(i32::from_le_bytes(self.array(key)?))),
            6 => MetaValue::F64(f64::from(f32::from_le_bytes(self.array(key)?))),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(err(format!("metadata {key}: boolean byte {b}"))),
            },
            8 => MetaValue::Str(self.string(key)?),
            9 if depth == 0 => {
                let inner = self.u32(key)?;
                let n = self.count(key)?;
                // Every element costs far more in memory than its bytes in the file: the
                // elements of all arrays together are bounded before any is read.
                self.elements = self.elements.saturating_add(n);
                if self.elements > MAX_META_ELEMENTS {
                    return Err(err(format!(
                        "metadata {key}: the arrays hold more than {MAX_META_ELEMENTS} elements in all"
                    )));
                }
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(err(format!("metadata {key}: unknown value type {other}"))),
        })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor directory; checks that every tensor's bytes lie
    /// inside the file. Tensor types this runtime cannot dequantize are an error naming them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader {
            bytes,
            pos: 0,
            elements: 0,
        };
        if r.take(4, "magic")? != MAGIC {
            return Err(err("not a GGUF file (bad magic)"));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = r.count("tensor count")?;
        let n_kv = r.count("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            if metadata.contains_key(&key) {
                return Err(err(format!("metadata key {key:?} appears twice")));
            }
            metadata.insert(key, value);
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(err(format!("tensor {name}: {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64(&name))
                .collect::<Result<Vec<_>>>()?;
            let ty = r.u32(&name)?;
            let offset = r.u64(&name)?;
            infos.push((name, dims, ty, offset));
        }
        let mut names: Vec<&str> = infos.iter().map(|(n, ..)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(err(format!("tensor {:?} appears twice", w[0])));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| err("general.alignment is not a power of two"))?,
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, offset) in infos {
            let ty = GgmlType::from_id(ty)
                .ok_or_else(|| err(format!("tensor {name}: unsupported GGML type {ty}")))?;
            let elements = dims
                .iter()
                .try_fold(1u64, |a, d| a.checked_mul(*d))
                .ok_or_else(|| err(format!("tensor {name}: dimensions overflow")))?;
            let size = ty.byte_size(elements, dims[0]).ok_or_else(|| {
                err(format!(
                    "tensor {name}: {} rows of {} are not whole {}-blocks",
                    elements / dims[0].max(1),
                    dims[0],
                    ty.name()
                ))
            })?;
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            let range = match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() as u64 => s as usize..e as usize,
                _ => return Err(err(format!("tensor {name}: data outside the file"))),
            };
            tensors.push(GgufTensor {
                name,
                dims,
                ty,
                range,
            });
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            bytes,
        })
    }

    /// The raw bytes of a tensor.
    pub fn data(&self, t: &GgufTensor) -> &'a [u8] {
        &self.bytes[t.range.clone()]
    }

    /// A metadata value, or an error naming the missing key.
    pub fn meta(&self, key: &str) -> Result<&MetaValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| err(format!("missing metadata {key}")))
    }

    /// A metadata integer.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta(key)?
            .as_u64()
            .ok_or_else(|| err(format!("metadata {key} is not an unsigned integer")))
    }

    /// A metadata string.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.meta(key)?
            .as_str()
            .ok_or_else(|| err(format!("metadata {key} is not a string")))
    }

    /// A metadata array of strings.
    pub fn meta_strings(&self, key: &str) -> Result<Vec<&str>> {
        match self.meta(key)? {
            MetaValue::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| err(format!("metadata {key} holds a non-string")))
                })
                .collect(),
            _ => Err(err(format!("metadata {key} is not an array"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 file with one F32 tensor of 4 elements and a string key.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "t");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_and_rejects_every_truncation() {
        let bytes = tiny();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.meta_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.tensors[0].dims, [4]);
        assert_eq!(f.data(&f.tensors[0]).len(), 16);
        for n in 0..bytes.len() {
            assert!(GgufFile::parse(&bytes[..n]).is_err(), "truncated at {n}");
        }
    }

    #[test]
    fn rejects_unknown_types_and_versions() {
        let mut bytes = tiny();
        bytes[4] = 9;
        assert!(GgufFile::parse(&bytes)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let mut bytes = tiny();
        // magic, version, counts (24) + the key/value (45) + name (9), n_dims (4), one dim (8).
        let ty_at = 24 + 45 + 9 + 4 + 8;
        bytes[ty_at..ty_at + 4].copy_from_slice(&99u32.to_le_bytes());
        let e = GgufFile::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("unsupported GGML type 99"), "{e}");
    }

    #[test]
    fn a_name_twice_is_refused() {
        // Two tensors named `t` (the directory entry repeated; the data is shared).
        let one = tiny();
        let header_end = 24 + 45 + 9 + 4 + 8 + 4 + 8;
        let mut b = one[..header_end].to_vec();
        b[16..24].copy_from_slice(&1u64.to_le_bytes());
        b[8..16].copy_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&one[24 + 45..header_end]);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend_from_slice(&one[one.len() - 16..]);
        let e = GgufFile::parse(&b).unwrap_err().to_string();
        assert!(e.contains("tensor \"t\" appears twice"), "{e}");
        // The metadata key twice.
        let mut b = one[..24 + 45].to_vec();
        b[16..24].copy_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&one[24..24 + 45]);
        b.extend_from_slice(&one[24 + 45..]);
        let e = GgufFile::parse(&b).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn huge_metadata_arrays_are_refused_before_they_are_read() {
        // An array of 2^24 one-byte elements: 16 MiB in the file, far more in memory.
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'a');
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(1u64 << 24).to_le_bytes());
        let e = GgufFile::parse(&b).unwrap_err().to_string();
        assert!(e.contains("more than 8388608 elements"), "{e}");
    }
}
