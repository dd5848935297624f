"""Sealed requests against `cocoon serve` (docs/sealed.md): the Python client of docs/sealed.md
(pyhpke, an independent HPKE implementation) run as written, the CLI's seal/unseal round
trip, every refusal with the server serving afterwards, and no prompt in the logs."""
import base64
import hashlib
import json
import pathlib
import re
import subprocess
import tempfile

import pytest
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from conftest import COCOON, ROOT, TINY, SMOL, Server

SUITE = CipherSuite.new(KEMId.DHKEM_P384_HKDF_SHA384, KDFId.HKDF_SHA384, AEADId.AES256_GCM)
SECRET = "the-zebra-crosses-at-midnight-4711"


@pytest.fixture(scope="module")
def worker():
    s = Server(SMOL, "--json-log", env={"COCOON_LOG": "trace,hyper=info,h2=info,mio=info,tokio=info"})
    yield s
    assert s.stop() == 0, s.stderr
    assert SECRET not in s.stderr, "a sealed prompt reached the logs"


def docs_client():
    text = (ROOT / "docs" / "sealed.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_python_client_of_the_docs_works_as_written(worker, capsys):
    code = docs_client().replace('"http://127.0.0.1:8080"', repr(worker.url))
    scope = {}
    exec(compile(code, "docs/sealed.md", "exec"), scope)
    answer = scope["answer"]
    assert answer["text"] and answer["finish"] in ("stop", "length")
    body = answer["receipt"]["body"]
    assert body["model_pin"] == worker.pin
    assert body["output"]["tokens"] == len(answer["output_ids"])
    # The key's evidence carries the binding the docs compute.
    key = scope["key"]
    ev = pathlib.Path(tempfile.mkdtemp()) / "ev.json"
    ev.write_text(json.dumps(key["evidence"]))
    out = subprocess.run([COCOON, "attest", "verify", str(ev), "--allow-dev", "--report-data",
                          scope["report_data"]], capture_output=True, text=True)
    assert out.returncode == 0, out


def seal_raw(url, plain, info=b"cocoon-request-v1", key_hex=None):
    import urllib.request
    key = json.load(urllib.request.urlopen(url + "/v1/cocoon/key"))
    pk = SUITE.kem.deserialize_public_key(bytes.fromhex(key_hex or key["hpke"]))
    enc, ctx = SUITE.create_sender_context(pk, info=info)
    return enc, ctx.seal(json.dumps(plain).encode())


def post(server, enc, ct):
    b64 = lambda b: base64.b64encode(b).decode()
    return server.http.post("/v1/cocoon/sealed", json={"version": 1, "enc": b64(enc), "ciphertext": b64(ct)})


def test_the_cli_seals_and_unseals_through_the_server(worker):
    d = pathlib.Path(tempfile.mkdtemp())
    (d / "key.json").write_text(worker.http.get("/v1/cocoon/key").text)
    seal = [COCOON, "seal", "--key", str(d / "key.json"), "--prompt", SECRET + " What is 2+2?",
            "--params", '{"max_tokens": 12, "seed": 3, "temperature": 0.5}', "--job-id", "j-1",
            "--nonce", "abcd", "--out", str(d / "req.json"), "--secret-out", str(d / "req.secret")]
    refused = subprocess.run(seal, capture_output=True, text=True)
    assert refused.returncode == 1 and "not trusted" in refused.stderr
    assert not (d / "req.json").exists(), "nothing is sealed to an untrusted key"
    done = subprocess.run(seal + ["--allow-dev"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert oct((d / "req.secret").stat().st_mode & 0o777) == "0o600"
    r = worker.http.post("/v1/cocoon/sealed", content=(d / "req.json").read_bytes())
    assert r.status_code == 200, r.text
    assert SECRET not in r.text
    (d / "resp.json").write_text(r.text)
    out = subprocess.run([COCOON, "unseal", str(d / "resp.json"), "--secret", str(d / "req.secret"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    body = answer["receipt"]["body"]
    assert body["sealed"]["request_sha256"] == done.stdout.strip()
    assert body["job_id"] == "j-1" and body["nonce"] == "abcd" and body["params"]["seed"] == 3
    assert body["input"]["text_sha256"] == hashlib.sha256((SECRET + " What is 2+2?").encode()).hexdigest()
    assert SECRET not in json.dumps(answer["receipt"])
    # Another request's secret does not open this answer.
    seal2 = [a if a != str(d / "req.json") else str(d / "req2.json") for a in seal]
    seal2 = [a if a != str(d / "req.secret") else str(d / "req2.secret") for a in seal2]
    assert subprocess.run(seal2 + ["--allow-dev"], capture_output=True).returncode == 0
    other = subprocess.run([COCOON, "unseal", str(d / "resp.json"), "--secret", str(d / "req2.secret")],
                           capture_output=True, text=True)
    assert other.returncode == 1 and "could not be opened" in other.stderr


def test_what_does_not_open_gets_one_generic_400_and_the_server_goes_on(worker):
    reply = SUITE.kem.derive_key_pair(b"r" * 48).public_key.to_public_bytes().hex()
    plain = {"prompt": SECRET, "raw": True, "params": {"max_tokens": 4}, "reply_key": reply}
    enc, ct = seal_raw(worker.url, plain)
    cases = {
        "flipped enc": (enc[:50] + bytes([enc[50] ^ 1]) + enc[51:], ct),
        "flipped ciphertext": (enc, ct[:7] + bytes([ct[7] ^ 1]) + ct[8:]),
        "other info": seal_raw(worker.url, plain, info=b"cocoon-response-v1"),
        "another worker's key": seal_raw(worker.url, plain,
                                         key_hex=SUITE.kem.derive_key_pair(b"w" * 48).public_key.to_public_bytes().hex()),
    }
    for name, (e, c) in cases.items():
        r = post(worker, e, c)
        assert r.status_code == 400, name
        assert r.json()["error"] == {"message": "the sealed request could not be opened",
                                     "type": "invalid_request_error", "code": "not_opened"}, name
    # A request that opens but is malformed names the field, never the value.
    e, c = seal_raw(worker.url, {**plain, "params": {"max_tokens": SECRET}})
    r = post(worker, e, c)
    assert r.status_code == 400 and "params.max_tokens" in r.text and SECRET not in r.text
    assert worker.http.post("/v1/cocoon/sealed", content=b"{nope").status_code == 400
    # And a good one still works; replaying it answers to the original reply key again.
    e, c = seal_raw(worker.url, plain)
    first, again = post(worker, e, c), post(worker, e, c)
    assert first.status_code == again.status_code == 200
    assert worker.healthy()


def test_a_server_without_an_attested_key_has_no_sealed_endpoint():
    s = Server(TINY, attest_key=False)
    try:
        assert s.http.get("/v1/cocoon/key").status_code == 404
        r = s.http.post("/v1/cocoon/sealed", content=b"{}")
        assert r.status_code == 404 and "--attest-key" in r.json()["error"]["message"]
    finally:
        assert s.stop() == 0
