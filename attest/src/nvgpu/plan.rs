//! What to fetch, at capture time, so that GPU evidence can be verified offline later: the
//! driver and VBIOS RIMs by NVIDIA's RIM ids, and one OCSP request per certificate (SHA-384
//! CertID, no nonce, so the responses can be cached and shipped as collateral). Building the
//! requests is tested on the real certificates; the fetching is left to any HTTP client at
//! capture time (`cocoon collateral` prints the commands).

use super::collateral::GpuCollateral;
use super::evidence::GpuEvidence;
use super::ocsp::request;
use super::spdm::GpuReport;
use super::verify::{driver_rim_id, vbios_rim_id};
use crate::error::Result;
use crate::x509::{parse_certs, Cert};

/// NVIDIA's RIM service: `GET {RIM_SERVICE}{id}` answers JSON whose `rim` is the base64 of the
/// signed XML.
pub const RIM_SERVICE: &str = "https://rim.attestation.nvidia.com/v1/rim/";
/// The responder to use when a certificate names none.
pub const DEFAULT_OCSP: &str = "https://ocsp.ndis.nvidia.com/";

/// One OCSP request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspFetch {
    /// The certificate's common name.
    pub subject: String,
    /// Its serial number, hex.
    pub serial: String,
    /// The responder (the certificate's AIA OCSP address, or [`DEFAULT_OCSP`]).
    pub url: String,
    /// The DER request.
    pub request: Vec<u8>,
}

/// Everything to fetch for one GPU's evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// RIM ids (driver, VBIOS).
    pub rims: Vec<String>,
    /// OCSP requests: the device chain less its leaf and root, and the chains of any RIMs
    /// already in the collateral.
    pub ocsp: Vec<OcspFetch>,
}

/// The OCSP address in a certificate's authority information access extension.
fn ocsp_url(c: &Cert) -> Option<String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    const AIA: &str = "1.3.6.1.5.5.7.1.1";
    const OCSP: &str = "1.3.6.1.5.5.7.48.1";
    let aia = AuthorityInfoAccessSyntax::from_der(c.extension(AIA)?).ok()?;
    aia.0.iter().find_map(|d| match &d.access_location {
        GeneralName::UniformResourceIdentifier(u) if d.access_method.to_string() == OCSP => {
            Some(u.as_str().to_owned())
        }
        _ => None,
    })
}

/// The plan for `e`, given what `have` already holds.
pub fn plan(e: &GpuEvidence, have: &GpuCollateral) -> Result<Plan> {
    let report = GpuReport::parse(&e.report_bytes()?)?;
    let device = parse_certs(e.certificates.as_bytes())?;
    let product = match e.arch {
        super::evidence::Arch::Hopper => "GH100",
        super::evidence::Arch::Blackwell => "GB100",
    };
    let rims = vec![driver_rim_id(product, &report), vbios_rim_id(&report)];
    let mut pairs: Vec<(&Cert, &Cert)> = Vec::new();
    let rim_chains = have
        .rims
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| (&r.certs[..], 0));
    for (chain, skip) in std::iter::once((&device[..], 1)).chain(rim_chains) {
        for w in chain.windows(2).skip(skip) {
            if !pairs.iter().any(|(s, _)| s.der == w[0].der) {
                pairs.push((&w[0], &w[1]));
            }
        }
    }
    let ocsp = pairs
        .into_iter()
        .map(|(s, i)| {
            Ok(OcspFetch {
                subject: s.common_name(),
                serial: hex::encode(s.serial()),
                url: ocsp_url(s).unwrap_or_else(|| DEFAULT_OCSP.into()),
                request: request(s, i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Plan { rims, ocsp })
}
