"""Fixtures: `cocoon serve` processes on 127.0.0.1 for the tests of tests/serve (run by ci/serve-test)."""
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

try:
    import httpx
except ImportError:  # openai 3 ships its HTTP client as httpx2
    import httpx2 as httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCOON = os.environ.get("COCOON_BIN", str(ROOT / "target" / "debug" / "cocoon"))
TINY = ROOT / "tests" / "fixtures" / "golden" / "tiny-gqa"
SMOL = pathlib.Path(os.environ.get("COCOON_SMOLLM2", ROOT / "models" / "smollm2-135m-f32"))


def pin_of(model):
    out = subprocess.run([COCOON, "pin", "-q", str(model)], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


class Server:
    """A running `cocoon serve`; `url` is its base address."""

    def __init__(self, model, *extra, name=None, env=None, attest_key=True):
        self.model = model
        self.pin = pin_of(model)
        self.name = name or pathlib.Path(model).name
        args = [COCOON, "serve", "-q", "--model", str(model), "--pin", self.pin,
                "--listen", "127.0.0.1:0", "--attest", "dev", "--backend", "cpu",
                "--threads", "2", *(["--attest-key"] if attest_key else []), *extra]
        # Logs go to a file: a pipe nobody reads would fill and stop the server.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"cocoon serve did not start: {line!r} {self.read_log()}")
        self.url = line.split()[-1]
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def healthy(self):
        return self.http.get("/healthz").status_code == 200

    def metric(self, name):
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.stderr = self.read_log()
        return code

    def read_log(self):
        self.log.seek(0)
        return self.log.read()


@pytest.fixture(scope="session")
def tiny():
    s = Server(TINY, "--max-batch", "8", "--max-queue", "32", "--body-timeout-s", "2",
               "--max-tokens-limit", "64")
    yield s
    assert s.stop() == 0, s.stderr


@pytest.fixture(scope="session")
def smol():
    if not (SMOL / "config.json").exists():
        pytest.fail(f"SmolLM2 is not at {SMOL}: run ci/fetch-model {SMOL} --dtype f32")
    s = Server(SMOL, "--max-tokens-limit", "256")
    yield s
    assert s.stop() == 0, s.stderr


def verify(receipt, *extra):
    """`cocoon verify --allow-dev --json` on a receipt; returns (exit code, report)."""
    path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"receipt-{os.getpid()}-{time.monotonic_ns()}.json"
    path.write_text(receipt if isinstance(receipt, str) else json.dumps(receipt))
    try:
        out = subprocess.run([COCOON, "verify", str(path), "--allow-dev", "--json", *extra],
                             capture_output=True, text=True)
    finally:
        path.unlink()
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None


def cocoon_run(model, pin, prompt, *extra):
    out = subprocess.run([COCOON, "run", "-q", "--model", str(model), "--pin", pin, "--prompt", prompt,
                          "--backend", "cpu", "--json", *extra], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
