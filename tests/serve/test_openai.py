"""The official `openai` client against `cocoon serve` (docs/design.md §11)."""
import hashlib

import openai
import pytest

from conftest import cocoon_run, verify

QUESTION = "What is the capital of France?"


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def receipt_of(obj):
    return obj.model_extra["cocoon"]["receipt"]


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_models_lists_the_one_model(smol):
    ids = [m.id for m in client(smol).models.list()]
    assert ids == [smol.name]


def test_greedy_chat_equals_cocoon_run_and_its_receipt_verifies(smol):
    r = client(smol).chat.completions.create(
        model=smol.name, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    run = cocoon_run(smol.model, smol.pin, QUESTION, "--max-tokens", "24", "--attest", "dev")
    assert text == run["text"]
    assert text.strip(), "an empty answer"
    receipt = receipt_of(r)
    body = receipt["body"]
    assert body["model_pin"] == smol.pin
    assert body["input"]["text_sha256"] == sha256(QUESTION) == run["receipt"]["body"]["input"]["text_sha256"]
    assert body["input"]["ids_sha256"] == run["receipt"]["body"]["input"]["ids_sha256"]
    assert body["output"]["text_sha256"] == sha256(text)
    assert r.usage.prompt_tokens == body["input"]["tokens"] == len(run["input_ids"])
    assert r.usage.completion_tokens == body["output"]["tokens"] == len(run["output_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == body["output"]["finish"]
    code, report = verify(receipt)
    assert code == 0 and report["verdict"] == "ok", report
    assert report["mode"] == "key"


def test_streaming_gives_the_same_text_usage_and_a_receipt_at_the_end(smol):
    c = client(smol)
    messages = [{"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "Name a large ocean."}]
    whole = c.chat.completions.create(model=smol.name, messages=messages, max_tokens=20)
    chunks = list(c.chat.completions.create(model=smol.name, messages=messages, max_tokens=20, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    receipt = receipt_of(last)
    assert receipt["body"]["output"]["ids_sha256"] == receipt_of(whole)["body"]["output"]["ids_sha256"]
    # A conversation is hashed as the canonical JSON of its messages.
    canon = '[{"content":"Answer in one sentence.","role":"system"},{"content":"Name a large ocean.","role":"user"}]'
    assert receipt["body"]["input"]["text_sha256"] == sha256(canon)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert verify(receipt)[0] == 0


def test_a_seed_makes_sampling_repeatable_and_is_recorded(smol):
    c = client(smol)
    ask = dict(model=smol.name, messages=[{"role": "user", "content": "Tell me a word."}], max_tokens=12,
               temperature=0.9, seed=1234)
    a, b = c.chat.completions.create(**ask), c.chat.completions.create(**ask)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert receipt_of(a)["body"]["params"]["seed"] == 1234
    assert receipt_of(a)["body"]["params"]["temperature"] == "0.9"
    unseeded = c.chat.completions.create(**{**ask, "seed": None})
    assert isinstance(receipt_of(unseeded)["body"]["params"]["seed"], int)


def test_stop_cuts_the_answer(smol):
    r = client(smol).chat.completions.create(
        model=smol.name, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert receipt_of(r)["body"]["output"]["text_sha256"] == sha256(r.choices[0].message.content)


def test_raw_completions_and_a_client_nonce(tiny):
    r = client(tiny).completions.create(model=tiny.name, prompt="Hello", max_tokens=5,
                                        extra_body={"cocoon": {"nonce": "00ff00ff"}})
    body = receipt_of(r)["body"]
    assert body["params"]["chat_template"] is False
    assert body["nonce"] == "00ff00ff"
    assert r.usage.completion_tokens == body["output"]["tokens"] == 5
    assert r.choices[0].finish_reason == "length"
    assert verify(receipt_of(r))[0] == 0


def test_errors_are_openai_errors(smol):
    c = client(smol)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=smol.name, messages=[{"role": "user", "content": "x"}], n=2)
    assert "`n`" in str(e.value)
