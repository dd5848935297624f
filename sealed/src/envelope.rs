//! The sealed message on the wire: `{"version": 1, "enc": "<base64>", "ciphertext": "<base64>"}`
//! (standard base64 with padding), for requests and responses alike.

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::SealError;
use crate::suite::PUBLIC_KEY_BYTES;

/// Largest ciphertext accepted.
pub const MAX_CIPHERTEXT_BYTES: usize = 16 << 20;

/// An encapsulated key and a ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The HPKE encapsulated key (an uncompressed P-384 point).
    pub enc: Vec<u8>,
    /// The AEAD ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// Reads the JSON form strictly: exactly `version` (1), `enc` and `ciphertext`.
    pub fn parse(text: &[u8]) -> Result<Self, SealError> {
        let what = "sealed message";
        if text.len() > MAX_CIPHERTEXT_BYTES * 4 / 3 + 1024 {
            return Err(SealError::malformed(what, "too large"));
        }
        let v: Value =
            serde_json::from_slice(text).map_err(|e| SealError::malformed(what, e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| SealError::malformed(what, "not a JSON object"))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["version", "enc", "ciphertext"].contains(&k.as_str()))
        {
            return Err(SealError::malformed(
                what,
                format!("unknown field {:?}", k.chars().take(64).collect::<String>()),
            ));
        }
        match obj.get("version").and_then(Value::as_u64) {
            Some(1) => {}
            Some(n) => {
                return Err(SealError::malformed(
                    what,
                    format!("version {n} (this build knows 1)"),
                ))
            }
            None => return Err(SealError::malformed(what, "`version` must be 1")),
        }
        let field = |name: &str| -> Result<Vec<u8>, SealError> {
            let s = obj.get(name).and_then(Value::as_str).ok_or_else(|| {
                SealError::malformed(what, format!("`{name}` must be a base64 string"))
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| SealError::malformed(what, format!("`{name}` is not base64")))
        };
        let enc = field("enc")?;
        let ciphertext = field("ciphertext")?;
        if enc.len() != PUBLIC_KEY_BYTES {
            return Err(SealError::malformed(
                what,
                format!("`enc` must be {PUBLIC_KEY_BYTES} bytes, got {}", enc.len()),
            ));
        }
        if ciphertext.len() < 16 || ciphertext.len() > MAX_CIPHERTEXT_BYTES {
            return Err(SealError::malformed(
                what,
                format!("`ciphertext` must be 16 to {MAX_CIPHERTEXT_BYTES} bytes"),
            ));
        }
        Ok(Sealed { enc, ciphertext })
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        json!({"version": 1, "enc": b64(&self.enc), "ciphertext": b64(&self.ciphertext)})
    }

    /// SHA-256 of the ciphertext bytes: a request's identity (the response's aad and the
    /// receipt's `sealed.request_sha256`).
    pub fn ciphertext_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.ciphertext).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reading() {
        let s = Sealed {
            enc: vec![4; 97],
            ciphertext: vec![9; 40],
        };
        let text = s.to_json().to_string();
        assert_eq!(Sealed::parse(text.as_bytes()).unwrap(), s);
        for bad in [
            "{",
            "[]",
            r#"{"version":2,"enc":"","ciphertext":""}"#,
            r#"{"enc":"","ciphertext":""}"#,
            r#"{"version":1,"enc":"!!","ciphertext":"AAAA"}"#,
            r#"{"version":1,"enc":"BA==","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
        ] {
            assert!(Sealed::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let mut extra = s.to_json();
        extra["x"] = json!(1);
        assert!(Sealed::parse(extra.to_string().as_bytes()).is_err());
    }
}
