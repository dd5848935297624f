//! Reference integrity manifests (RIMs): NVIDIA's golden measurements for a driver or a VBIOS,
//! as a SWID tag (ISO/IEC 19770-2) signed with an enveloped XML-DSig signature (canonical
//! XML 1.1, ECDSA P-384 / SHA-384, the signer's chain in `KeyInfo`).
//!
//! [`Rim::parse`] checks the signature (digest of the document less the signature, signature
//! over the canonical `SignedInfo` by the first `KeyInfo` certificate) and reads only the
//! signed part; the chain to the pinned RIM root depends on the time and is checked by
//! [`Rim::check_chain`]. Anything outside the fixed shape is refused: another algorithm, a
//! second signature or reference, a DTD, an unknown `active` value.

use base64::Engine;
use roxmltree::{Document, Node, ParsingOptions};
use sha2::{Digest, Sha384};

use super::c14n::canonicalize;
use super::chain::{verify_chain, Root, SigMemo};
use crate::error::{Error, Result};
use crate::x509::{p384_key, Cert, MAX_CERTS};

const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const HASH_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Largest RIM read (NVIDIA's are about 21 KB).
pub const MAX_RIM_BYTES: usize = 1 << 20;
/// Most XML nodes parsed in one RIM.
const MAX_NODES: u32 = 20_000;
/// Most alternatives one measurement may list.
const MAX_ALTERNATIVES: usize = 64;

/// What a RIM describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RimKind {
    /// The GPU driver (version like `550.90.07`).
    Driver,
    /// The VBIOS (version like `96.00.9F.00.01`).
    Vbios,
}

impl RimKind {
    /// `driver` or `vbios`.
    pub fn as_str(self) -> &'static str {
        match self {
            RimKind::Driver => "driver",
            RimKind::Vbios => "vbios",
        }
    }
}

/// One golden measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Golden {
    /// Index in the RIM, from 0 (the report's block index less one).
    pub index: u16,
    /// Whether the report's measurement must match.
    pub active: bool,
    /// The accepted values.
    pub alternatives: Vec<Vec<u8>>,
}

/// A RIM whose XML signature verified.
#[derive(Clone, Debug)]
pub struct Rim {
    /// Driver or VBIOS, from the form of the version.
    pub kind: RimKind,
    /// `Meta/@colloquialVersion`.
    pub version: String,
    /// `Meta/@product` (`GH100`).
    pub product: String,
    /// The golden measurements by index.
    pub measurements: Vec<Golden>,
    /// The signer's chain from `KeyInfo`, leaf first.
    pub certs: Vec<Cert>,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "nvgpu RIM",
        message,
    }
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| bad(format!("{what}: not base64: {e}")))
}

/// The element children of `n`; text between them must be whitespace.
fn elements<'a, 'i>(n: Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>> {
    let mut out = Vec::new();
    for c in n.children() {
        if c.is_element() {
            out.push(c);
        } else if c.is_text() && !c.text().unwrap_or("").trim().is_empty() {
            return Err(bad(format!(
                "text inside <{}> where only elements belong",
                n.tag_name().name()
            )));
        }
    }
    Ok(out)
}

/// The one child named `name` in the XML-DSig namespace, in order.
fn ds<'a, 'i>(children: &[Node<'a, 'i>], i: usize, name: &str) -> Result<Node<'a, 'i>> {
    children
        .get(i)
        .filter(|c| c.tag_name().namespace() == Some(DSIG_NS) && c.tag_name().name() == name)
        .copied()
        .ok_or_else(|| bad(format!("XML signature: <{name}> expected at position {i}")))
}

fn algorithm(n: Node<'_, '_>, want: &str) -> Result<()> {
    match n.attribute("Algorithm") {
        Some(a) if a == want => Ok(()),
        other => Err(bad(format!(
            "XML signature: {} algorithm {other:?}, only {want} is supported",
            n.tag_name().name()
        ))),
    }
}

/// Whether a version has the VBIOS form: five dotted groups of two hex digits.
fn is_vbios_version(v: &str) -> bool {
    let groups: Vec<&str> = v.split('.').collect();
    groups.len() == 5
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Rim {
    /// Parses a RIM and checks its XML signature.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_RIM_BYTES {
            return Err(bad(format!(
                "{} bytes, more than the {MAX_RIM_BYTES} read",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let doc = Document::parse_with_options(
            text,
            ParsingOptions {
                allow_dtd: false,
                nodes_limit: MAX_NODES,
                ..Default::default()
            },
        )
        .map_err(|e| bad(format!("XML: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().namespace() != Some(SWID_NS)
            || root.tag_name().name() != "SoftwareIdentity"
        {
            return Err(bad("the root is not a SWID SoftwareIdentity".into()));
        }
        if doc.root().children().any(|n| n.is_pi()) {
            return Err(bad("processing instructions are not supported".into()));
        }
        let signatures: Vec<_> = doc
            .descendants()
            .filter(|n| {
                n.tag_name().namespace() == Some(DSIG_NS) && n.tag_name().name() == "Signature"
            })
            .collect();
        let signature = match signatures.as_slice() {
            [s] if s.parent_element().map(|p| p.id()) == Some(root.id()) => *s,
            [_] => return Err(bad("the XML signature is not a child of the root".into())),
            other => {
                return Err(bad(format!(
                    "{} XML signatures, exactly one expected",
                    other.len()
                )))
            }
        };
        let sig_children = elements(signature)?;
        if sig_children.len() != 3 {
            return Err(bad(
                "XML signature: SignedInfo, SignatureValue and KeyInfo expected".into(),
            ));
        }
        let signed_info = ds(&sig_children, 0, "SignedInfo")?;
        let signature_value = ds(&sig_children, 1, "SignatureValue")?;
        let key_info = ds(&sig_children, 2, "KeyInfo")?;

        let si = elements(signed_info)?;
        if si.len() != 3 {
            return Err(bad("XML signature: exactly one Reference expected".into()));
        }
        algorithm(ds(&si, 0, "CanonicalizationMethod")?, C14N11)?;
        algorithm(ds(&si, 1, "SignatureMethod")?, ECDSA_SHA384)?;
        let reference = ds(&si, 2, "Reference")?;
        if reference.attribute("URI") != Some("") || reference.attributes().len() != 1 {
            return Err(bad(
                "XML signature: the Reference must be URI=\"\" (the whole document)".into(),
            ));
        }
        let rc = elements(reference)?;
        if rc.len() != 3 {
            return Err(bad(
                "XML signature: Transforms, DigestMethod and DigestValue expected".into(),
            ));
        }
        let transforms = elements(ds(&rc, 0, "Transforms")?)?;
        if transforms.len() != 2 {
            return Err(bad(
                "XML signature: the enveloped-signature and c14n 1.1 transforms expected".into(),
            ));
        }
        algorithm(ds(&transforms, 0, "Transform")?, ENVELOPED)?;
        algorithm(ds(&transforms, 1, "Transform")?, C14N11)?;
        algorithm(ds(&rc, 1, "DigestMethod")?, SHA384)?;
        let digest = b64(
            "DigestValue",
            ds(&rc, 2, "DigestValue")?.text().unwrap_or(""),
        )?;

        let kc = elements(key_info)?;
        let x509 = match kc.as_slice() {
            [d] => ds(&kc, 0, "X509Data").map(|_| *d)?,
            _ => return Err(bad("XML signature: KeyInfo must hold one X509Data".into())),
        };
        let cert_nodes = elements(x509)?;
        if cert_nodes.is_empty() || cert_nodes.len() > MAX_CERTS {
            return Err(bad(format!(
                "XML signature: {} certificates in X509Data",
                cert_nodes.len()
            )));
        }
        let certs = (0..cert_nodes.len())
            .map(|i| {
                let n = ds(&cert_nodes, i, "X509Certificate")?;
                Cert::from_der(&b64("X509Certificate", n.text().unwrap_or(""))?)
            })
            .collect::<Result<Vec<_>>>()?;

        let document = canonicalize(root, Some(signature.id()))?;
        if Sha384::digest(document.as_bytes())[..] != digest[..] {
            return Err(Error::BadSignature(
                "RIM: the document's SHA-384 is not the signed DigestValue (the RIM was changed)"
                    .into(),
            ));
        }
        let raw = b64("SignatureValue", signature_value.text().unwrap_or(""))?;
        let sig = p384::ecdsa::Signature::from_slice(&raw).map_err(|_| {
            bad(format!(
                "SignatureValue of {} bytes is not a P-384 r||s",
                raw.len()
            ))
        })?;
        let signed = canonicalize(signed_info, None)?;
        use p384::ecdsa::signature::Verifier;
        p384_key(&certs[0])?
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| {
                Error::BadSignature(format!(
                    "RIM: the XML signature does not verify with {:?}",
                    certs[0].common_name()
                ))
            })?;

        let swid = |n: &Node<'_, '_>, name: &str| {
            n.tag_name().namespace() == Some(SWID_NS) && n.tag_name().name() == name
        };
        let top = elements(root)?;
        let metas: Vec<_> = top.iter().filter(|n| swid(n, "Meta")).collect();
        let payloads: Vec<_> = top.iter().filter(|n| swid(n, "Payload")).collect();
        let (meta, payload) = match (metas.as_slice(), payloads.as_slice()) {
            ([m], [p]) => (**m, **p),
            _ => return Err(bad("exactly one Meta and one Payload expected".into())),
        };
        let version = meta
            .attribute("colloquialVersion")
            .ok_or_else(|| bad("Meta has no colloquialVersion".into()))?
            .to_owned();
        let product = meta.attribute("product").unwrap_or("").to_owned();
        let mut measurements: Vec<Golden> = Vec::new();
        for r in elements(payload)? {
            if !swid(&r, "Resource") || r.attribute("type") != Some("Measurement") {
                return Err(bad(
                    "Payload holds something other than Measurement resources".into(),
                ));
            }
            let index: u16 = r
                .attribute("index")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| bad("a Resource without a valid index".into()))?;
            let active = match r.attribute("active") {
                Some("True") => true,
                Some("False") => false,
                other => return Err(bad(format!("Resource {index}: active {other:?}"))),
            };
            let count: usize = r
                .attribute("alternatives")
                .and_then(|a| a.parse().ok())
                .filter(|n| (1..=MAX_ALTERNATIVES).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "Resource {index}: alternatives not 1..{MAX_ALTERNATIVES}"
                    ))
                })?;
            let alternatives = (0..count)
                .map(|k| {
                    let h = r
                        .attribute((HASH_NS, format!("Hash{k}").as_str()))
                        .ok_or_else(|| bad(format!("Resource {index}: Hash{k} missing")))?;
                    hex::decode(h)
                        .ok()
                        .filter(|b| b.len() == 48)
                        .ok_or_else(|| {
                            bad(format!("Resource {index}: Hash{k} is not 96 hex digits"))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            if measurements.iter().any(|m| m.index == index) {
                return Err(bad(format!("Resource {index} appears twice")));
            }
            measurements.push(Golden {
                index,
                active,
                alternatives,
            });
        }
        Ok(Rim {
            kind: if is_vbios_version(&version) {
                RimKind::Vbios
            } else {
                RimKind::Driver
            },
            version,
            product,
            measurements,
            certs,
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
        })
    }

    /// Checks the signer's chain to the pinned NVIDIA RIM root at `at`.
    pub fn check_chain(&self, at: u64, memo: &SigMemo) -> Result<()> {
        verify_chain(
            &format!("{} RIM {}", self.kind.as_str(), self.version),
            &self.certs,
            Root::Rim,
            at,
            memo,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn vector(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/vectors/nvgpu")
                .join(name),
        )
        .unwrap()
    }

    const DRIVER: &str = "go-nvattest-tools-h100/NV_GPU_DRIVER_GH100_550.90.07.xml";
    const VBIOS: &str = "go-nvattest-tools-h100/NV_GPU_VBIOS_1010_0200_882_96009F0001.xml";

    #[test]
    fn the_real_rims_verify() {
        let at = crate::appraisal::parse_rfc3339("2025-10-24T12:00:00Z").unwrap();
        let d = Rim::parse(&vector(DRIVER)).unwrap();
        assert_eq!((d.kind, d.version.as_str()), (RimKind::Driver, "550.90.07"));
        assert_eq!(d.measurements.len(), 64);
        d.check_chain(at, &SigMemo::default()).unwrap();
        let v = Rim::parse(&vector(VBIOS)).unwrap();
        assert_eq!(
            (v.kind, v.version.as_str()),
            (RimKind::Vbios, "96.00.9F.00.01")
        );
        v.check_chain(at, &SigMemo::default()).unwrap();
        let active = |r: &Rim| r.measurements.iter().filter(|m| m.active).count();
        assert_eq!(active(&d) + active(&v), 33);
        // The driver RIM's signer expired on 2026-06-01.
        let later = crate::appraisal::parse_rfc3339("2026-06-02T00:00:00Z").unwrap();
        let e = d
            .check_chain(later, &SigMemo::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HCC RIM L4 Signer") && e.contains("not valid"),
            "{e}"
        );
        for name in [
            "nvtrust-hopper-sample/Driver_RIM_test_no_gpu.swidtag",
            "nvtrust-hopper-sample/1010_0200_882_96005E0001_test_no_gpu.swidtag",
        ] {
            Rim::parse(&vector(name)).unwrap();
        }
    }

    #[test]
    fn changes_in_signed_elements_or_the_signature_are_rejected() {
        let text = String::from_utf8(vector(DRIVER)).unwrap();
        for (from, to) in [
            (
                "colloquialVersion=\"550.90.07\"",
                "colloquialVersion=\"550.90.08\"",
            ),
            ("active=\"False\"", "active=\"True\""),
            (
                "index=\"7\" active=\"True\"",
                "index=\"7\" active=\"False\"",
            ),
            ("<ds:SignatureValue>uA3a", "<ds:SignatureValue>uA3b"),
            ("<ds:SignedInfo>", "<ds:SignedInfo Id=\"x\">"),
        ] {
            assert!(text.contains(from), "{from}");
            let changed = text.replacen(from, to, 1);
            assert!(Rim::parse(changed.as_bytes()).is_err(), "{from} -> {to}");
        }
        // Whitespace inside a tag is not part of the canonical form: still valid.
        let same = text.replacen("<ns0:Payload ", "<ns0:Payload  ", 1);
        assert!(Rim::parse(same.as_bytes()).is_ok());
        // A second signature, a DTD: refused.
        let two = text.replacen(
            "</SoftwareIdentity>",
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/></SoftwareIdentity>",
            1,
        );
        assert!(Rim::parse(two.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("2 XML signatures"));
        let dtd = format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{text}");
        assert!(Rim::parse(dtd.as_bytes()).is_err());
    }
}
