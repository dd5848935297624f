//! The HPKE suite: DHKEM(P-384, HKDF-SHA384) `0x0011`, HKDF-SHA384 `0x0002`, AES-256-GCM
//! `0x0002`, base mode. Public keys travel as hex of the 97-byte uncompressed SEC1 point.

use hpke::aead::{Aead as AeadTrait, AesGcm256};
use hpke::kdf::{HkdfSha384, Kdf as KdfTrait};
use hpke::kem::{DhP384HkdfSha384, Kem as KemTrait};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::error::SealError;

/// The KEM.
pub type Kem = DhP384HkdfSha384;
/// The KDF.
pub type Kdf = HkdfSha384;
/// The AEAD.
pub type Aead = AesGcm256;
/// A recipient's public key.
pub type PublicKey = <Kem as KemTrait>::PublicKey;
type PrivateKey = <Kem as KemTrait>::PrivateKey;

/// Length of an encoded public key (uncompressed SEC1 P-384).
pub const PUBLIC_KEY_BYTES: usize = 97;

/// Info of a sealed request.
pub const REQUEST_INFO: &[u8] = b"cocoon-request-v1";
/// Info of a sealed response.
pub const RESPONSE_INFO: &[u8] = b"cocoon-response-v1";

/// An HPKE key pair, made in this process. The private key is zeroized when dropped (by the
/// `p384` secret key type inside).
pub struct HpkeKeyPair {
    secret: PrivateKey,
    public: PublicKey,
}

impl HpkeKeyPair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut rng = rand_core_09::UnwrapErr(rand_core_09::OsRng);
        let (secret, public) = Kem::gen_keypair(&mut rng);
        HpkeKeyPair { secret, public }
    }

    /// The key pair `DeriveKeyPair(ikm)` gives (RFC 9180 §7.1.3): for tests and test vectors.
    pub fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = Kem::derive_keypair(ikm);
        HpkeKeyPair { secret, public }
    }

    /// The private key's bytes (a client keeps its reply secret this way between seal and
    /// unseal).
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    /// A key pair from its private key's bytes.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let secret = PrivateKey::from_bytes(bytes)
            .map_err(|_| SealError::malformed("secret", "not a P-384 private key"))?;
        let public = Kem::sk_to_pk(&secret);
        Ok(HpkeKeyPair { secret, public })
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The public key as hex of its uncompressed SEC1 point.
    pub fn public_hex(&self) -> String {
        public_hex(&self.public)
    }

    /// Opens `ciphertext` sealed to this key with `enc`, `info` and `aad`.
    pub(crate) fn open(
        &self,
        enc: &[u8],
        info: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_with::<Aead, Kdf, Kem>(&self.secret, enc, info, aad, ciphertext)
    }
}

/// Hex of a public key's uncompressed SEC1 point.
pub fn public_hex(pk: &PublicKey) -> String {
    hex::encode(pk.to_bytes())
}

/// Reads a public key: hex of a 97-byte uncompressed SEC1 P-384 point on the curve.
pub fn parse_public(hex_text: &str) -> Result<PublicKey, SealError> {
    let bytes =
        hex::decode(hex_text).map_err(|_| SealError::malformed("public key", "not hexadecimal"))?;
    if bytes.len() != PUBLIC_KEY_BYTES || bytes[0] != 4 {
        return Err(SealError::malformed(
            "public key",
            format!(
                "an uncompressed SEC1 P-384 point has {PUBLIC_KEY_BYTES} bytes starting with 04, got {} bytes",
                bytes.len()
            ),
        ));
    }
    PublicKey::from_bytes(&bytes)
        .map_err(|_| SealError::malformed("public key", "not a point on P-384"))
}

/// Seals `plaintext` to `pk`: `(enc, ciphertext)`.
pub(crate) fn seal(
    pk: &PublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let mut rng = rand_core_09::UnwrapErr(rand_core_09::OsRng);
    let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        pk,
        info,
        plaintext,
        aad,
        &mut rng,
    )
    .map_err(|e| SealError::Seal(e.to_string()))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// Opens a single-shot base-mode message for any suite (the test vectors of RFC 9180 cover
/// other KEMs than ours; the same code path runs them).
pub(crate) fn open_with<A: AeadTrait, F: KdfTrait, K: KemTrait>(
    sk: &K::PrivateKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let enc = K::EncappedKey::from_bytes(enc).map_err(|_| SealError::NotOpened)?;
    hpke::single_shot_open::<A, F, K>(&OpModeR::Base, sk, &enc, info, ciphertext, aad)
        .map(Zeroizing::new)
        .map_err(|_| SealError::NotOpened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_and_every_refusal() {
        let k = HpkeKeyPair::generate();
        let (enc, ct) = seal(k.public(), REQUEST_INFO, b"", b"hello").unwrap();
        assert_eq!(enc.len(), PUBLIC_KEY_BYTES);
        assert_eq!(&**k.open(&enc, REQUEST_INFO, b"", &ct).unwrap(), b"hello");
        let other = HpkeKeyPair::generate();
        assert_eq!(
            other.open(&enc, REQUEST_INFO, b"", &ct),
            Err(SealError::NotOpened)
        );
        assert_eq!(
            k.open(&enc, RESPONSE_INFO, b"", &ct),
            Err(SealError::NotOpened)
        );
        assert_eq!(
            k.open(&enc, REQUEST_INFO, b"x", &ct),
            Err(SealError::NotOpened)
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            k.open(&enc, REQUEST_INFO, b"", &bad),
            Err(SealError::NotOpened)
        );
        let mut bad_enc = enc.clone();
        bad_enc[5] ^= 1;
        assert_eq!(
            k.open(&bad_enc, REQUEST_INFO, b"", &ct),
            Err(SealError::NotOpened)
        );
        assert_eq!(
            k.open(&enc[..10], REQUEST_INFO, b"", &ct),
            Err(SealError::NotOpened)
        );
    }

    /// RFC 9180's base-mode AES-GCM vectors (tests/vectors/hpke/README.md) through
    /// [`open_with`]: the receiver's key from `ikmR`, the vector's `enc` and `ct` open to `pt`,
    /// and a changed byte does not open.
    #[test]
    fn rfc9180_vectors_open_through_the_same_path() {
        use hpke::aead::AesGcm128;
        use hpke::kdf::{HkdfSha256, HkdfSha512};
        use hpke::kem::{DhP256HkdfSha256, DhP521HkdfSha512};
        let text = include_str!("../../tests/vectors/hpke/rfc9180-base-aesgcm.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert_eq!(vectors.len(), 3);
        fn run<A: AeadTrait, F: KdfTrait, K: KemTrait>(v: &serde_json::Value) {
            let h = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
            let (sk, pk) = K::derive_keypair(&h("ikmR"));
            assert_eq!(pk.to_bytes().to_vec(), h("pkRm"), "DeriveKeyPair");
            assert_eq!(sk.to_bytes().to_vec(), h("skRm"), "DeriveKeyPair");
            let pt = open_with::<A, F, K>(&sk, &h("enc"), &h("info"), &h("aad"), &h("ct")).unwrap();
            assert_eq!(*pt, h("pt"));
            let mut ct = h("ct");
            ct[3] ^= 0x80;
            assert!(open_with::<A, F, K>(&sk, &h("enc"), &h("info"), &h("aad"), &ct).is_err());
        }
        for v in &vectors {
            match (
                v["kem_id"].as_u64(),
                v["kdf_id"].as_u64(),
                v["aead_id"].as_u64(),
            ) {
                (Some(16), Some(1), Some(1)) => run::<AesGcm128, HkdfSha256, DhP256HkdfSha256>(v),
                (Some(16), Some(1), Some(2)) => run::<AesGcm256, HkdfSha256, DhP256HkdfSha256>(v),
                (Some(18), Some(3), Some(2)) => run::<AesGcm256, HkdfSha512, DhP521HkdfSha512>(v),
                other => panic!("unexpected suite {other:?}"),
            }
        }
    }

    #[test]
    fn public_keys_are_read_strictly() {
        let k = HpkeKeyPair::generate();
        let hex_text = k.public_hex();
        assert_eq!(hex_text.len(), 2 * PUBLIC_KEY_BYTES);
        assert_eq!(public_hex(&parse_public(&hex_text).unwrap()), hex_text);
        assert!(parse_public("zz").is_err());
        assert!(parse_public(&hex_text[..96]).is_err());
        let mut off_curve = hex_text.clone();
        off_curve.replace_range(190.., "00");
        assert!(parse_public(&off_curve).is_err());
        let round = HpkeKeyPair::from_secret_bytes(&k.secret_bytes()).unwrap();
        assert_eq!(round.public_hex(), hex_text);
    }
}
