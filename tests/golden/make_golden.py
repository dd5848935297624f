#!/usr/bin/env python3
"""Golden fixtures for cocoon's CPU inference, produced by an independent implementation:
Hugging Face `transformers` on the CPU in float32.

  python3 -m venv .venv && .venv/bin/pip install torch transformers gguf numpy safetensors accelerate
  .venv/bin/python tests/golden/make_golden.py --smollm2-gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf

Writes tests/fixtures/golden/:
  tiny-gqa/   GQA (4 heads / 2 kv), tied embeddings, F32 weights
  tiny-mha/   MHA, untied head, BF16 weights, llama3 RoPE scaling
      each: config.json, tokenizer.json, model.safetensors, expected.json
  smollm2.json  for `cocoon import-gguf --dtype f32` of the GGUF: token ids of several texts
                (transformers' tokenizer built from the same GGUF), last-position top-20 logits
                and greedy continuations of a few prompts.
Not run by CI: CI checks cocoon against what this script wrote.
"""
import argparse, json, os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "golden")
VOCAB = 259  # 256 byte tokens + <|bos|> <|eos|> <|pad|>


def byte_level_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    chars = byte_level_chars()
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(256, "<|bos|>"), special(257, "<|eos|>"), special(258, "<|pad|>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {chars[b]: b for b in range(256)}, "merges": []},
    }


def greedy(model, ids, n):
    """n greedy tokens, each from a full forward pass over everything so far (no KV cache).
    transformers 5.24's `generate()` disagreed with its own forward pass on one SmolLM2 prompt
    (a 0.13 logit margin, so not rounding), so the reference is the forward pass itself."""
    ids, out = list(ids), []
    for _ in range(n):
        with torch.no_grad():
            t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        out.append(t)
        ids.append(t)
    return out


SEQUENCES = [[256, 72, 101, 108, 108, 111], [256, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 200, 100, 50, 25, 12, 6, 3, 1, 0, 255, 254]]


def tiny(name, seed, dtype, **kw):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=256,
                      eos_token_id=257, pad_token_id=258, **kw)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than the default init, so that logits are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
            else:
                p.uniform_(0.8, 1.2)
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f)
    # The reference runs in float32 on the weights as stored (BF16 values widened exactly).
    ref = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    cases = []
    for seq in SEQUENCES:
        ids = torch.tensor([seq])
        with torch.no_grad():
            logits = ref(ids).logits[0]
        cases.append({"tokens": seq, "last_logits": [round(float(x), 6) for x in logits[-1]],
                      "argmax": [int(x) for x in logits.argmax(-1)], "greedy": greedy(ref, seq, 16)})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"producer": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, float32 CPU",
                   "cases": cases}, f)
    print("wrote", out)


TEXTS = ["Hello, world!", "  leading spaces and trailing  ", "line one\nline two\n\n\tindented",
         "Ünïcödé: naïve café, 東京, Москва, emoji 🚀🎉", "numbers 1234567 and 3.14159", "<|im_start|>user\nhi<|im_end|>\n",
         "def f(x):\n    return x ** 2  # square"]
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "1, 2, 3, 4,"]


def smollm2(gguf):
    d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tokenization = [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]
    chat = [{"prompt": p, "ids": tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                          tokenize=True)} for p in PROMPTS]
    if chat and not isinstance(chat[0]["ids"], list):
        for c in chat:
            c["ids"] = list(c["ids"]["input_ids"])
    generations = []
    for c in chat:
        ids = torch.tensor([c["ids"]])
        with torch.no_grad():
            last = model(ids).logits[0, -1]
        top = torch.topk(last, 20)
        generations.append({"prompt_ids": c["ids"], "top_ids": [int(i) for i in top.indices],
                            "top_logits": [round(float(v), 5) for v in top.values],
                            "greedy": greedy(model, c["ids"], 32)})
    out = os.path.join(ROOT, "smollm2.json")
    with open(out, "w") as fh:
        json.dump({"producer": f"transformers {__import__('transformers').__version__} from {f} (dequantized to float32)",
                   "tokenization": tokenization, "chat": chat, "generations": generations}, fh, ensure_ascii=False)
    print("wrote", out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2-gguf")
    a = ap.parse_args()
    torch.set_num_threads(2)
    tiny("tiny-gqa", 1, torch.float32, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0)
    tiny("tiny-mha", 2, torch.bfloat16, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rope_theta=500000.0,
         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32})
    if a.smollm2_gguf:
        smollm2(a.smollm2_gguf)
