#!/usr/bin/env python3
"""Aggregate decode throughput and time to first token of an OpenAI-compatible server.

    bench/peer/serve-load.py URL MODEL [CONCURRENCY ...]

For each concurrency N, N streamed chat requests (greedy, 64 new tokens, a different prompt
each) are sent at once; prints one JSON line per N: completion tokens (from each answer's
usage), wall time, aggregate tokens/s, and p50/p99 time to the first content chunk. The same
client measures `cocoon serve` and llama.cpp's `llama-server` (standard library only).
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse


def one(url, model, i, out):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {
        "model": model,
        "messages": [{"role": "user",
                      "content": f"Story {i}: tell a long story about a colour, in many sentences."}],
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"request {i}: HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft, tokens = None, None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content") and ttft is None:
                ttft = time.monotonic() - t0
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    conn.close()
    if tokens is None:
        raise SystemExit(f"request {i}: no usage in the stream")
    out[i] = (ttft if ttft is not None else time.monotonic() - t0, tokens)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    url, model = sys.argv[1], sys.argv[2]
    levels = [int(c) for c in sys.argv[3:]] or [1, 4, 16, 64]
    for n in levels:
        out = [None] * n
        threads = [threading.Thread(target=one, args=(url, model, i, out)) for i in range(n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        if any(o is None for o in out):
            raise SystemExit(f"concurrency {n}: a request failed")
        tokens = sum(o[1] for o in out)
        ttfts = [o[0] * 1e3 for o in out]
        print(json.dumps({"url": url, "concurrency": n, "output_tokens": tokens, "wall_s": wall,
                          "aggregate_tokens_per_s": tokens / wall,
                          "ttft_p50_ms": percentile(ttfts, 0.5),
                          "ttft_p99_ms": percentile(ttfts, 0.99)}), flush=True)


if __name__ == "__main__":
    main()
