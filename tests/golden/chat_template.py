"""Renders a chat template the way Hugging Face `transformers` does (its
`_compile_jinja_template`: jinja2's ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loop controls, a `tojson` that keeps non-ASCII, `raise_exception`, and
`strftime_now`) for one user message with the generation prompt, `tools` and `documents` none.
The clock is fixed so that the output can be committed as a fixture.

    python3 tests/golden/chat_template.py tests/fixtures/templates/llama-3.2.jinja \
        --bos '<|begin_of_text|>' --eos '<|eot_id|>' --prompt 'Héllo, wörld!  ' \
        --now 2026-11-25T08:04:05 > tests/fixtures/templates/llama-3.2.expected

Needs only jinja2 (pip install jinja2).
"""

import argparse
import datetime
import json
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox


def main():
    p = argparse.ArgumentParser()
    p.add_argument("template")
    p.add_argument("--bos", default="")
    p.add_argument("--eos", default="")
    p.add_argument("--prompt", required=True)
    p.add_argument("--now", required=True, help="UTC time, ISO 8601")
    a = p.parse_args()
    now = datetime.datetime.fromisoformat(a.now)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    with open(a.template, encoding="utf-8") as f:
        template = env.from_string(f.read())
    out = template.render(
        messages=[{"role": "user", "content": a.prompt}],
        tools=None,
        documents=None,
        add_generation_prompt=True,
        bos_token=a.bos,
        eos_token=a.eos,
    )
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
