"""The official `openai` client against a running `caramba serve` on SmolLM2-135M-Instruct.

Usage: python3 tests/serve_openai.py BASE_URL MODEL_ID
(e.g. http://127.0.0.1:8080/v1 smollm2-135m). Run by tests/serve.rs, which starts the server with
--max-body-bytes 65536; prints one line per check and `N passed, M failed`, and exits 1 on a failure.
"""

import sys

import openai

BASE_URL, MODEL = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=BASE_URL, api_key="unused", max_retries=0, timeout=120)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
results = []


def error_object(e):
    """The `error` object of an APIStatusError (the client unwraps it in some versions)."""
    body = e.body if isinstance(e.body, dict) else {}
    return body.get("error", body)


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok    {name}")
        except Exception as e:  # a failed check is reported, the others still run
            results.append((name, e))
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
        return fn

    return wrap


@check("models.list names the served model")
def _():
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL], ids


@check("chat answer mentions Paris")
def _():
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=32)
    text = r.choices[0].message.content
    assert "Paris" in text, text
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u


@check("streamed greedy text equals the non-streamed one")
def _():
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(parts) == whole.choices[0].message.content, ("".join(parts), whole.choices[0].message.content)
    assert finish == whole.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage


@check("text completion continues a prompt")
def _():
    r = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=4)
    assert "Paris" in r.choices[0].text, r.choices[0].text


@check("a bad model name is NotFoundError (404)")
def _():
    try:
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    except openai.NotFoundError as e:
        assert error_object(e)["code"] == "model_not_found", e.body
        return
    raise AssertionError("no error")


@check("an oversized body is a 413")
def _():
    big = [{"role": "user", "content": "Paris " * 20000}]
    try:
        client.chat.completions.create(model=MODEL, messages=big, max_tokens=4)
    except openai.APIStatusError as e:
        assert e.status_code == 413, e.status_code
        return
    raise AssertionError("no error")


@check("a prompt beyond the context is BadRequestError (400)")
def _():
    long = [{"role": "user", "content": "Paris " * 9000}]
    try:
        client.chat.completions.create(model=MODEL, messages=long, max_tokens=4)
    except openai.BadRequestError as e:
        assert error_object(e)["code"] == "context_length_exceeded", e.body
        return
    raise AssertionError("no error")


@check("n = 2 is BadRequestError (400)")
def _():
    try:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, n=2)
    except openai.BadRequestError as e:
        assert error_object(e)["param"] == "n", e.body
        return
    raise AssertionError("no error")


failed = sum(1 for _, e in results if e is not None)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
