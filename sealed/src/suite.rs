//! The HPKE suite: DHKEM(P-384, HKDF-SHA384) `0x0011`, HKDF-SHA384 `0x0002`, AES-256-GCM
//! `0x0002`, base mode — rustls' implementation of RFC 9180 over aws-lc
//! (`DH_KEM_P384_HKDF_SHA384_AES_256`), whose P-384 is several times faster than a portable
//! one. Public keys travel as hex of the 97-byte uncompressed SEC1 point.

use aws_lc_rs::agreement::{PrivateKey as AgreementKey, ECDH_P384};
use rustls::crypto::aws_lc_rs::hpke::DH_KEM_P384_HKDF_SHA384_AES_256;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey, HpkePublicKey};
use zeroize::Zeroizing;

use crate::error::SealError;

/// Length of an encoded public key (uncompressed SEC1 P-384).
pub const PUBLIC_KEY_BYTES: usize = 97;

/// Info of a sealed request.
pub const REQUEST_INFO: &[u8] = b"cocoon-request-v1";
/// Info of a sealed response.
pub const RESPONSE_INFO: &[u8] = b"cocoon-response-v1";

/// The suite.
fn suite() -> &'static dyn Hpke {
    DH_KEM_P384_HKDF_SHA384_AES_256
}

/// A recipient's public key: an uncompressed SEC1 point, checked to be on P-384.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; PUBLIC_KEY_BYTES]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl PublicKey {
    /// Reads an uncompressed SEC1 P-384 point; anything else (another length or form, a point
    /// not on the curve) is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let point: [u8; PUBLIC_KEY_BYTES] =
            bytes.try_into().ok().filter(|b: &[u8; PUBLIC_KEY_BYTES]| b[0] == 4).ok_or_else(|| {
                SealError::malformed(
                    "public key",
                    format!(
                        "an uncompressed SEC1 P-384 point has {PUBLIC_KEY_BYTES} bytes starting with 04, got {} bytes",
                        bytes.len()
                    ),
                )
            })?;
        p384::PublicKey::from_sec1_bytes(&point)
            .map_err(|_| SealError::malformed("public key", "not a point on P-384"))?;
        Ok(PublicKey(point))
    }

    /// The point's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HPKE key pair, made in this process. The private key is zeroized when dropped (by
/// rustls' key type).
pub struct HpkeKeyPair {
    secret: HpkePrivateKey,
    public: PublicKey,
}

impl HpkeKeyPair {
    /// A fresh key pair from aws-lc's random source.
    pub fn generate() -> Result<Self, SealError> {
        let (public, secret) = suite()
            .generate_key_pair()
            .map_err(|e| SealError::Seal(format!("generating an HPKE key pair: {e}")))?;
        Ok(HpkeKeyPair {
            public: PublicKey::from_bytes(&public.0)?,
            secret,
        })
    }

    /// The private key's bytes: the 48-byte big-endian scalar (a client keeps its reply
    /// secret this way between seal and unseal).
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.secret_bytes().to_vec())
    }

    /// A key pair from its private key's bytes (a 48-byte big-endian scalar in 1..n).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let bad = || SealError::malformed("secret", "not a P-384 private key");
        let key = AgreementKey::from_private_key(&ECDH_P384, bytes).map_err(|_| bad())?;
        let public = key.compute_public_key().map_err(|_| bad())?;
        Ok(HpkeKeyPair {
            public: PublicKey::from_bytes(public.as_ref())?,
            secret: HpkePrivateKey::from(bytes.to_vec()),
        })
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
        open_with(suite(), &self.secret, enc, info, aad, ciphertext)
    }
}

/// Hex of a public key's uncompressed SEC1 point.
pub fn public_hex(pk: &PublicKey) -> String {
    hex::encode(pk.0)
}

/// Reads a public key: hex of a 97-byte uncompressed SEC1 P-384 point on the curve.
pub fn parse_public(hex_text: &str) -> Result<PublicKey, SealError> {
    let bytes =
        hex::decode(hex_text).map_err(|_| SealError::malformed("public key", "not hexadecimal"))?;
    PublicKey::from_bytes(&bytes)
}

/// Seals `plaintext` to `pk`: `(enc, ciphertext)`.
pub(crate) fn seal(
    pk: &PublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let (enc, ct) = suite()
        .seal(info, aad, plaintext, &HpkePublicKey(pk.0.to_vec()))
        .map_err(|e| SealError::Seal(e.to_string()))?;
    Ok((enc.0, ct))
}

/// Opens a single-shot base-mode message for any suite (the test vectors of RFC 9180 cover
/// other KEMs than ours; the same code path runs them). An `enc` that is not a point of the
/// suite's curve, like every other failure, is [`SealError::NotOpened`].
pub(crate) fn open_with(
    suite: &dyn Hpke,
    sk: &HpkePrivateKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    suite
        .open(&EncapsulatedSecret(enc.to_vec()), info, aad, ciphertext, sk)
        .map(Zeroizing::new)
        .map_err(|_| SealError::NotOpened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::hpke::{
        DH_KEM_P256_HKDF_SHA256_AES_128, DH_KEM_P256_HKDF_SHA256_AES_256,
        DH_KEM_P521_HKDF_SHA512_AES_256,
    };

    #[test]
    fn a_round_trip_and_every_refusal() {
        let k = HpkeKeyPair::generate().unwrap();
        let (enc, ct) = seal(k.public(), REQUEST_INFO, b"", b"hello").unwrap();
        assert_eq!(enc.len(), PUBLIC_KEY_BYTES);
        assert_eq!(&**k.open(&enc, REQUEST_INFO, b"", &ct).unwrap(), b"hello");
        let other = HpkeKeyPair::generate().unwrap();
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
        assert_eq!(
            k.open(&enc, REQUEST_INFO, b"", &[]),
            Err(SealError::NotOpened)
        );
    }

    /// RFC 9180's base-mode AES-GCM vectors (tests/vectors/hpke/README.md) through
    /// [`open_with`]: the receiver's `skRm`, the vector's `enc` and `ct` open to `pt`, and a
    /// changed byte does not open.
    #[test]
    fn rfc9180_vectors_open_through_the_same_path() {
        let text = include_str!("../../tests/vectors/hpke/rfc9180-base-aesgcm.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert_eq!(vectors.len(), 3);
        for v in &vectors {
            let h = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
            let suite: &dyn Hpke = match (
                v["kem_id"].as_u64(),
                v["kdf_id"].as_u64(),
                v["aead_id"].as_u64(),
            ) {
                (Some(16), Some(1), Some(1)) => DH_KEM_P256_HKDF_SHA256_AES_128,
                (Some(16), Some(1), Some(2)) => DH_KEM_P256_HKDF_SHA256_AES_256,
                (Some(18), Some(3), Some(2)) => DH_KEM_P521_HKDF_SHA512_AES_256,
                other => panic!("unexpected suite {other:?}"),
            };
            let sk = HpkePrivateKey::from(h("skRm"));
            let pt = open_with(suite, &sk, &h("enc"), &h("info"), &h("aad"), &h("ct")).unwrap();
            assert_eq!(*pt, h("pt"));
            let mut ct = h("ct");
            ct[3] ^= 0x80;
            assert!(open_with(suite, &sk, &h("enc"), &h("info"), &h("aad"), &ct).is_err());
        }
    }

    /// RFC 9180 publishes no P-384 vectors: our suite is checked against a second, independent
    /// implementation (the `hpke` crate, RustCrypto's P-384) in both directions.
    #[test]
    fn interoperates_with_an_independent_implementation() {
        use hpke::aead::AesGcm256;
        use hpke::kdf::HkdfSha384;
        use hpke::kem::{DhP384HkdfSha384 as Kem, Kem as _};
        use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
        let mut rng = rand_core_09::UnwrapErr(rand_core_09::OsRng);

        // Theirs seals, ours opens.
        let ours = HpkeKeyPair::generate().unwrap();
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(ours.public().as_bytes()).unwrap();
        let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha384, Kem, _>(
            &OpModeS::Base,
            &pk,
            REQUEST_INFO,
            b"from the other side",
            b"aad",
            &mut rng,
        )
        .unwrap();
        let pt = ours
            .open(&enc.to_bytes(), REQUEST_INFO, b"aad", &ct)
            .unwrap();
        assert_eq!(&**pt, b"from the other side");

        // Ours seals, theirs opens; our secret bytes are theirs too.
        let (sk, pk) = Kem::gen_keypair(&mut rng);
        let our_view = HpkeKeyPair::from_secret_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(our_view.public().as_bytes(), &pk.to_bytes()[..]);
        let (enc, ct) = seal(our_view.public(), RESPONSE_INFO, b"aad", b"back").unwrap();
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
        let pt = hpke::single_shot_open::<AesGcm256, HkdfSha384, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            RESPONSE_INFO,
            &ct,
            b"aad",
        )
        .unwrap();
        assert_eq!(pt, b"back");
    }

    #[test]
    fn public_keys_and_secrets_are_read_strictly() {
        let k = HpkeKeyPair::generate().unwrap();
        let hex_text = k.public_hex();
        assert_eq!(hex_text.len(), 2 * PUBLIC_KEY_BYTES);
        assert_eq!(public_hex(&parse_public(&hex_text).unwrap()), hex_text);
        assert!(parse_public("zz").is_err());
        assert!(parse_public(&hex_text[..96]).is_err());
        let mut off_curve = hex_text.clone();
        off_curve.replace_range(190.., "00");
        assert!(parse_public(&off_curve).is_err());
        let mut compressed = hex_text.clone();
        compressed.replace_range(..2, "02");
        assert!(parse_public(&compressed).is_err());
        let round = HpkeKeyPair::from_secret_bytes(&k.secret_bytes()).unwrap();
        assert_eq!(round.public_hex(), hex_text);
        for bad in [&[0u8; 48][..], &[0xff; 48], &[1; 47], &[]] {
            assert!(HpkeKeyPair::from_secret_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
