"""`cocoon serve` as the engine of a COCOON worker (docs/design.md §11a, docs/cocoon.md).

Plays the worker as TelegramMessenger/cocoon's public source describes it: it health-checks
`GET /v1/models` every second, relays up to 60 concurrent client requests after rewriting them
(both `max_tokens` and `max_completion_tokens`, `stream_options.include_usage` forced, its
end-to-end encryption keys left in the body), reads the engine's stream as bare JSON values one
a line, re-serialises every object with sorted keys adding `usage.*_cost` fields, and bills
from `usage` alone. Checks that the text, the billed usage (equal to the receipt's counts) and
the receipt (still verifying after re-serialisation) all come through."""
import concurrent.futures
import hashlib
import json
import threading
import time

import pytest

from conftest import SMOL, Server, httpx, verify

PRICE_PER_TOKEN = 7  # nanotons, say: the worker's own business


@pytest.fixture(scope="module")
def engine():
    if not (SMOL / "config.json").exists():
        pytest.fail(f"SmolLM2 is not at {SMOL}")
    s = Server(SMOL, "--stream-format", "ndjson", "--model-name", "model", "--max-batch", "16",
               "--max-queue", "64", "--max-tokens-limit", "256", name="model")
    yield s
    assert s.stop() == 0, s.stderr


def worker_rewrite(client_request):
    r = dict(client_request)
    limit = r.pop("max_tokens", None) or r.pop("max_completion_tokens", None) or 64
    r["max_tokens"] = r["max_completion_tokens"] = limit
    if r.get("stream"):
        r["stream_options"] = {**r.get("stream_options", {}), "include_usage": True}
    r.update(is_encrypted=True, sender_public_key="aa" * 32, receiver_public_key="bb" * 32,
             encryption_nonce="cc" * 12)
    return r


def reserialise(obj):
    """What the worker sends on: sorted keys, cost fields added to usage."""
    obj = json.loads(json.dumps(obj, sort_keys=True))
    if obj.get("usage"):
        u = obj["usage"]
        u["prompt_tokens_cost"] = u["prompt_tokens"] * PRICE_PER_TOKEN
        u["completion_tokens_cost"] = u["completion_tokens"] * PRICE_PER_TOKEN
        u["total_cost"] = u["prompt_tokens_cost"] + u["completion_tokens_cost"]
    return json.dumps(obj, sort_keys=True)


def relay(engine, client_request):
    """One request through the worker: returns (text, billed usage, receipt as re-serialised)."""
    req = worker_rewrite(client_request)
    with httpx.Client(base_url=engine.url, timeout=300) as c:
        if not req.get("stream"):
            r = c.post("/v1/chat/completions", json=req)
            assert r.status_code == 200, r.text
            out = json.loads(reserialise(r.json()))
            return out["choices"][0]["message"]["content"], out["usage"], out["cocoon"]["receipt"]
        text, usage, receipt = "", None, None
        with c.stream("POST", "/v1/chat/completions", json=req) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            for line in r.iter_lines():
                if not line.strip():
                    continue
                obj = json.loads(reserialise(json.loads(line)))  # a bare JSON value, or this fails
                for ch in obj.get("choices", []):
                    text += ch.get("delta", {}).get("content") or ""
                if obj.get("usage"):
                    usage = obj["usage"]
                if obj.get("cocoon"):
                    receipt = obj["cocoon"]["receipt"]
        return text, usage, receipt


def test_a_worker_relays_60_concurrent_requests_with_exact_usage_and_receipts(engine):
    health = []
    stop = threading.Event()

    def check_health():
        with httpx.Client(base_url=engine.url, timeout=10) as c:
            while not stop.is_set():
                t = time.monotonic()
                code = c.get("/v1/models").status_code
                health.append((code, time.monotonic() - t))
                stop.wait(1.0)
    checker = threading.Thread(target=check_health)
    checker.start()
    questions = [f"Give me a fact about the number {i}." for i in range(60)]
    requests = [{"model": "model", "messages": [{"role": "user", "content": q}], "max_tokens": 12,
                 "stream": i % 4 != 0, "temperature": 0.7 if i % 2 else 0, "seed": i}
                for i, q in enumerate(questions)]
    try:
        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            results = list(pool.map(lambda r: relay(engine, r), requests))
    finally:
        stop.set()
        checker.join()
    mismatches = 0
    for q, (text, usage, receipt) in zip(questions, results):
        body = receipt["body"]
        assert text, "an empty answer"
        assert body["input"]["text_sha256"] == hashlib.sha256(q.encode()).hexdigest()
        assert body["output"]["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        if (usage["prompt_tokens"], usage["completion_tokens"]) != (body["input"]["tokens"], body["output"]["tokens"]):
            mismatches += 1
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] <= usage["prompt_tokens"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] <= usage["completion_tokens"]
        assert body["params"]["max_tokens"] == 12
    assert mismatches == 0
    # The receipt survives the worker's re-serialisation: its binding is over the body's JCS.
    for _, _, receipt in results[:8]:
        code, report = verify(json.dumps(receipt, sort_keys=True))
        assert code == 0, report
    assert health and all(code == 200 for code, _ in health), health
    worst = max(t for _, t in health)
    print(f"\nworker test: 60 requests, {len(health)} health checks, slowest {worst * 1000:.1f} ms")
