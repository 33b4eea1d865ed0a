"""Compare generating several prompts in one batch with generating them one at a time.

    python benchmarks/batched_decode.py --model qwen2.5-coder-0.5b --prompts 8 \\
        --new-tokens 32 --threads 1 --repeats 3

Both ways run in one process on one context with the native hook attached
and no operations, greedy, on the same PolyRefuse test prompts. The two are
interleaved per repeat and the median wall time of each is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from lrgate_cpp.model import Model
from lrgate_cpp.runtime import Context
from lrgate_cpp.sources import load_language
from lrgate_cpp.template import encode_messages, template_for
from lrgate_cpp.zoo import resolve_model_path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("LRGATE_DATA", "../shared/data")))
    args = parser.parse_args(argv)

    model = Model(resolve_model_path(args.model))
    template = template_for(model)
    langs = ("en", "de", "ar", "th")
    texts = [p.text for lang in langs
             for p in load_language(args.data_root, lang, "test", args.prompts)][:args.prompts]
    prompts = [encode_messages(model, template, [{"role": "user", "content": t}]) for t in texts]
    longest = max(len(p) for p in prompts)
    n_ctx = len(prompts) * (longest + args.new_tokens) + 256
    times: dict[str, list[float]] = {"batched": [], "one at a time": []}
    tokens: dict[str, int] = {}
    with Context(model, n_ctx=n_ctx, n_batch=max(512, len(prompts) * longest),
                 n_seq_max=len(prompts), n_threads=args.threads) as ctx:
        for _ in range(args.repeats):
            ctx.clear()
            start = time.perf_counter()
            out = ctx.generate_all(dict(enumerate(prompts)), args.new_tokens)
            times["batched"].append(time.perf_counter() - start)
            tokens["batched"] = sum(len(t) for t in out.values())

            ctx.clear()
            start = time.perf_counter()
            count = 0
            for seq, prompt in enumerate(prompts):
                count += len(ctx.generate_all({seq: prompt}, args.new_tokens)[seq])
                ctx.clear(seq)
            times["one at a time"].append(time.perf_counter() - start)
            tokens["one at a time"] = count

    result = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        result[name] = median
        print(f"{name:>14}: {median:7.2f} s for {len(prompts)} prompts, "
              f"{tokens[name] / median:6.1f} generated tok/s")
    print(f"speedup of batched decoding: {result['one at a time'] / result['batched']:.2f}x "
          f"({args.model}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f})")
    return result


if __name__ == "__main__":
    main()
