"""Load test of a running `caramba serve`: C concurrent clients, each sending R chat requests in
a row with the official async `openai` client; prints p50/p99 latency, completion tokens per
second over the wall time, and failures by kind. Sends traffic only to the given URL (default
loopback); every loop is bounded.

    caramba serve --model smollm2-135m --port 8080 &
    python3 scripts/serve_load.py --url http://127.0.0.1:8080/v1 --model smollm2-135m \
        --clients 64 --requests 8 --max-tokens 16
"""

import argparse
import asyncio
import collections
import statistics
import time

import openai

PROMPTS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "Say hello in Spanish.",
    "What is two plus two?",
]


async def client_loop(client, args, cid, latencies, failures, tokens):
    for r in range(args.requests):
        start = time.perf_counter()
        try:
            resp = await client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": PROMPTS[(cid + r) % len(PROMPTS)]}],
                max_tokens=args.max_tokens,
                temperature=0.7,
                seed=cid * 1000 + r,
            )
            latencies.append(time.perf_counter() - start)
            tokens.append(resp.usage.completion_tokens)
        except openai.APIStatusError as e:
            failures[f"HTTP {e.status_code}"] += 1
        except Exception as e:  # timeouts, refused connections: counted, not fatal
            failures[type(e).__name__] += 1


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080/v1")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--api-key", default="unused")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=8, help="requests per client, one after another")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one request may take")
    args = p.parse_args()
    client = openai.AsyncOpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=args.timeout)
    latencies, tokens, failures = [], [], collections.Counter()
    start = time.perf_counter()
    await asyncio.gather(
        *(client_loop(client, args, c, latencies, failures, tokens) for c in range(args.clients))
    )
    wall = time.perf_counter() - start
    total = args.clients * args.requests
    q = sorted(latencies)
    pct = lambda f: q[min(len(q) - 1, int(f * len(q)))] if q else float("nan")
    print(f"{args.clients} clients x {args.requests} requests, max_tokens {args.max_tokens}: {wall:.1f} s wall")
    print(f"ok {len(latencies)}/{total}; failures: {dict(failures) or 'none'}")
    if q:
        print(f"latency p50 {pct(0.50):.2f} s, p99 {pct(0.99):.2f} s, mean {statistics.mean(q):.2f} s")
    print(f"{sum(tokens)} completion tokens, {sum(tokens) / wall:.1f} tokens/s; {len(latencies) / wall:.2f} requests/s")


if __name__ == "__main__":
    asyncio.run(main())
