"""The eval's task generators at the longest length: seconds to build one sample per family.

Each family builds one sample at ``--length`` (default 4M) in ``--unit`` (default tokens,
counted by the SDK's estimate, about 3.5 characters a token, so 4M tokens is about 14 M
characters), ``--repeat`` times with the same seed; the median is reported, with the
characters built and a check that every repeat is byte-identical. No model is called.

    uv run python bench/bench_eval_generate.py                     # 4M tokens, every family
    uv run python bench/bench_eval_generate.py --unit chars --length 4M --families niah,pairs
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

from rlm_sdk import estimate_tokens
from rlm_sdk.eval import FAMILIES, SampleSpec, get_family, parse_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", default="4M")
    parser.add_argument("--unit", choices=("chars", "tokens"), default="tokens")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    length = parse_length(args.length)
    tokenizer = estimate_tokens if args.unit == "tokens" else None
    print(f"{'family':<14} {'median s':>9} {'chars':>12} {'achieved':>12} identical")
    for family in args.families.split(","):
        spec = SampleSpec(
            family=family,
            params=get_family(family).params(None),
            length=length,
            unit=args.unit,
            seed=args.seed,
        )
        times, digests = [], set()
        for _ in range(args.repeat):
            started = time.perf_counter()
            sample = spec.build(tokenizer)
            times.append(time.perf_counter() - started)
            digests.add(hashlib.sha256(sample.context.encode()).hexdigest())
        print(
            f"{family:<14} {statistics.median(times):>9.2f} {len(sample.context):>12,} "
            f"{sample.achieved:>12,} {len(digests) == 1}"
        )


if __name__ == "__main__":
    main()
