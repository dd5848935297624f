"""NVIDIA GPU evidence: our verdicts against an independent check written here from the public
specs (SPDM 1.1 DSP0274, RFC 5280, RFC 6960, XML-DSig) with other people's cryptography:
`cryptography` for ECDSA, certificates and OCSP, `signxml` (lxml, libxml2) for the RIMs' XML
signatures. Run by ci/gpu-cross-check; COCOON_BIN names the cocoon binary.

On the real vectors both must agree; on tampered copies ours must reject whatever the
independent check rejects (ours may reject more: it is stricter about encodings)."""

import base64
import datetime
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509 import ocsp
from signxml import SignatureConfiguration, XMLVerifier

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests/vectors/nvgpu"
SET = VECTORS / "go-nvattest-tools-h100"
COCOON = os.environ.get("COCOON_BIN", str(ROOT / "target/debug/cocoon"))
NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
AT = datetime.datetime(2025, 10, 24, 12, tzinfo=datetime.timezone.utc)
DEVICE_ROOT = x509.load_pem_x509_certificate((SET / "device_root.pem").read_bytes())
RIM_ROOT = x509.load_pem_x509_certificate((SET / "rim_root.pem").read_bytes())
SHA384_NS = "{http://www.w3.org/2001/04/xmlenc#sha384}"


def u(b, i, n):
    return int.from_bytes(b[i : i + n], "little")


def parse_report(data):
    """DSP0274 GET_MEASUREMENTS (37 bytes) ‖ MEASUREMENTS; NVIDIA opaque TLVs."""
    req, resp = data[:37], data[37:]
    assert req[:2] == b"\x11\xe0" and resp[:2] == b"\x11\x60", "not SPDM 1.1 measurements"
    n, rec_len = resp[4], u(resp, 5, 3)
    rec = resp[8 : 8 + rec_len]
    assert len(rec) == rec_len
    blocks, i = {}, 0
    for _ in range(n):
        idx, size = rec[i], u(rec, i + 2, 2)
        m = rec[i + 4 : i + 4 + size]
        blocks[idx] = m[3 : 3 + u(m, 1, 2)]
        i += 4 + size
    assert i == rec_len
    p = 8 + rec_len + 32
    olen = u(resp, p, 2)
    opaque, j = {}, 0
    od = resp[p + 2 : p + 2 + olen]
    assert len(od) == olen
    while j < olen:
        t, s = u(od, j, 2), u(od, j + 2, 2)
        opaque[t] = od[j + 4 : j + 4 + s]
        j += 4 + s
    sig = resp[p + 2 + olen :]
    assert len(sig) == 96, "signature length"
    v = opaque[6]
    return {
        "nonce": req[4:36].hex(),
        "blocks": blocks,
        "driver": opaque[3].split(b"\0")[0].decode(),
        "vbios": "%02X.%02X.%02X.%02X.%02X" % (v[3], v[2], v[1], v[0], v[4]),
        "fwid": opaque[20],
        "signed": data[: len(data) - 96],
        "sig": sig,
    }


def chain_ok(certs, root, at):
    assert certs[-1] == root, "chain does not end at the pinned root"
    for c, issuer in zip(certs, certs[1:] + [root]):
        c.verify_directly_issued_by(issuer)
        assert c.not_valid_before_utc <= at <= c.not_valid_after_utc, f"{c.subject} not valid"


def independent(report, chain_pem, rims, responses, at=AT):
    """Returns (verdict, facts); any failed check is a rejection."""
    try:
        r = parse_report(report)
        certs = x509.load_pem_x509_certificates(chain_pem)
        chain_ok(certs, DEVICE_ROOT, at)
        rr, ss = int.from_bytes(r["sig"][:48], "big"), int.from_bytes(r["sig"][48:], "big")
        certs[0].public_key().verify(
            encode_dss_signature(rr, ss), r["signed"], ec.ECDSA(hashes.SHA384())
        )
        ext = certs[0].extensions.get_extension_for_oid(x509.ObjectIdentifier("2.23.133.5.4.1"))
        assert ext.value.value[-48:] == r["fwid"], "FWID"
        assert r["nonce"] == NONCE, "nonce"
        golden, rim_certs = {}, []
        versions = {}
        for xml in rims:
            found = re.findall(rb"<ds:X509Certificate>(.*?)</ds:X509Certificate>", xml, re.S)
            rc = [x509.load_der_x509_certificate(base64.b64decode(b"".join(f.split()))) for f in found]
            chain_ok(rc, RIM_ROOT, at)
            cfg = SignatureConfiguration(require_x509=True, expect_references=1, verification_time=at)
            signed = XMLVerifier().verify(
                xml, x509_cert=rc[0].public_bytes(serialization.Encoding.PEM), expect_config=cfg
            ).signed_xml
            meta = signed.find("{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}Meta")
            versions[meta.get("colloquialVersion")] = True
            for res in signed.iter("{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}Resource"):
                if res.get("active") == "True":
                    idx = int(res.get("index"))
                    assert idx not in golden, "index active twice"
                    golden[idx] = [
                        bytes.fromhex(res.get(f"{SHA384_NS}Hash{k}"))
                        for k in range(int(res.get("alternatives")))
                    ]
            rim_certs.append(rc)
        assert r["driver"] in versions and r["vbios"] in versions, "no RIM for these versions"
        matched = sum(r["blocks"].get(i + 1) in alts for i, alts in golden.items())
        assert matched == len(golden), "measurement mismatch"
        pairs = {}
        for chain in [certs[1:]] + rim_certs:
            for c, issuer in zip(chain, chain[1:]):
                pairs[c.serial_number] = (c, issuer)
        good = 0
        for der in responses:
            resp = ocsp.load_der_ocsp_response(der)
            assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            c, issuer = pairs[resp.serial_number]
            assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
            signer = resp.certificates[0] if resp.certificates else issuer
            if signer != issuer:
                signer.verify_directly_issued_by(issuer)
                eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                assert x509.ExtendedKeyUsageOID.OCSP_SIGNING in eku
                assert signer.not_valid_before_utc <= resp.produced_at_utc <= signer.not_valid_after_utc
            signer.public_key().verify(
                resp.signature, resp.tbs_response_bytes, ec.ECDSA(resp.signature_hash_algorithm)
            )
            assert resp.produced_at_utc <= at and at - resp.produced_at_utc <= datetime.timedelta(days=90)
            good += 1
        assert good == len(pairs), "an OCSP response is missing"
        return "ok", {"driver": r["driver"], "vbios": r["vbios"], "checked": len(golden)}
    except Exception as e:  # any failure of the independent check is its rejection
        return "rejected", {"why": f"{type(e).__name__}: {e}"}


def ours(tmp, report, chain_pem, rims, responses):
    d = tmp / "collateral"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for i, x in enumerate(rims):
        (d / f"rim{i}.xml").write_bytes(x)
    for i, o in enumerate(responses):
        (d / f"ocsp{i}.der").write_bytes(o)
    ev = tmp / "gpu.json"
    ev.write_text(json.dumps({"platform": "nvgpu", "arch": "hopper", "nonce": NONCE,
                              "report": base64.b64encode(report).decode(),
                              "certificates": chain_pem.decode("latin-1")}))
    p = subprocess.run([COCOON, "attest", "verify", str(ev), "--collateral", str(d), "--at",
                        "2025-10-24T12:00:00Z", "--nonce", NONCE, "--json"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode == 2:
        return "rejected", {"malformed": p.stderr.strip()}
    return json.loads(p.stdout)["verdict"], json.loads(p.stdout)


def the_set():
    report = (SET / "test_raw_gpu_attestation_report.dat").read_bytes()
    chain = (SET / "test_gpu_attestation_certificate_chain.dat").read_bytes()
    rims = [(SET / "NV_GPU_DRIVER_GH100_550.90.07.xml").read_bytes(),
            (SET / "NV_GPU_VBIOS_1010_0200_882_96009F0001.xml").read_bytes()]
    responses = [base64.b64decode(p.read_bytes()) for p in sorted((SET / "ocsp").iterdir())]
    return report, chain, rims, responses


def test_the_real_set_is_ok_for_both(tmp_path):
    report, chain, rims, responses = the_set()
    verdict, facts = independent(report, chain, rims, responses)
    assert verdict == "ok", facts
    got, v = ours(tmp_path, report, chain, rims, responses)
    assert got == "ok", v
    assert (v["driver_version"], v["vbios_version"]) == (facts["driver"], facts["vbios"])
    assert v["measurements"]["checked"] == v["measurements"]["matched"] == facts["checked"] == 33


def test_the_rims_of_another_driver_are_rejected_by_both(tmp_path):
    report, chain, _, responses = the_set()
    d = VECTORS / "nvtrust-hopper-sample"
    rims = [(d / "Driver_RIM_test_no_gpu.swidtag").read_bytes(),
            (d / "1010_0200_882_96005E0001_test_no_gpu.swidtag").read_bytes()]
    assert independent(report, chain, rims, responses)[0] == "rejected"
    assert ours(tmp_path, report, chain, rims, responses)[0] == "rejected"


@pytest.mark.parametrize("target", ["report", "chain", "rim", "ocsp"])
def test_whatever_the_independent_check_rejects_we_reject(tmp_path, target):
    rng = random.Random(f"cross-check-{target}")
    report, chain, rims, responses = the_set()
    independent_rejected = 0
    for _ in range(25):
        r, c, x, o = report, chain, list(rims), list(responses)

        def flip(b):
            b = bytearray(b)
            bit = rng.randrange(len(b) * 8)
            b[bit // 8] ^= 1 << (bit % 8)
            return bytes(b)

        if target == "report":
            r = flip(r)
        elif target == "chain":
            ders = [x.public_bytes(serialization.Encoding.DER) for x in x509.load_pem_x509_certificates(chain)]
            k = rng.randrange(len(ders))
            ders[k] = flip(ders[k])
            c = b"".join(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(dd) + b"-----END CERTIFICATE-----\n" for dd in ders)
        elif target == "rim":
            k = rng.randrange(2)
            x[k] = flip(x[k])
        else:
            k = rng.randrange(len(o))
            o[k] = flip(o[k])
        theirs = independent(r, c, x, o)[0]
        mine = ours(tmp_path, r, c, x, o)[0]
        independent_rejected += theirs == "rejected"
        assert not (theirs == "rejected" and mine == "ok"), "we accepted what the independent check rejects"
        assert mine == "rejected", "a bit flip was accepted"
    assert independent_rejected > 0
