"""Runs the Autobahn WebSocket conformance cases (via kosoku) against our echo harness.

Usage: python run.py URL NAME [--cases GLOB ...] [--exclude GLOB ...]
Writes target/autobahn/NAME.json and exits non-zero if any case failed.
"""

import argparse
import asyncio
import collections
import json
import os
import sys

from kosoku import FailureError, run_fuzzingclient


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("name")
    p.add_argument("--cases", nargs="*", default=None)
    p.add_argument("--exclude", nargs="*", default=None)
    p.add_argument("--out", default="target/autobahn")
    args = p.parse_args()
    try:
        results = await run_fuzzingclient(
            args.url, cases=args.cases, exclude_cases=args.exclude, concurrency=2
        )
    except FailureError as e:
        results = e.results
    by_verdict = collections.Counter(
        (r.behavior.value, r.behavior_close.value) for r in results
    )
    failed = [r for r in results if not r.passed]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(
            [
                {
                    "case": r.case_id,
                    "behavior": r.behavior.value,
                    "behavior_close": r.behavior_close.value,
                    "passed": r.passed,
                    "remote_close_code": r.remote_close_code,
                    "result": r.result,
                    "result_close": r.result_close,
                    "duration_ms": r.duration,
                }
                for r in results
            ],
            f,
            indent=1,
        )
    print(f"autobahn[{args.name}]: {len(results)} cases")
    for (b, bc), n in sorted(by_verdict.items()):
        print(f"  {n:4d}  behavior={b} close={bc}")
    for r in failed:
        print(
            f"  FAILED {r.case_id}: {r.behavior.value}/{r.behavior_close.value}: "
            f"{r.result} / {r.result_close} (close code {r.remote_close_code})"
        )
    if not results:
        print("no cases ran")
        return 1
    print(f"autobahn-{args.name}: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: kosoku's native runtime was seen to abort
    # (SIGABRT) while being finalized after a complete, passing run.
    os._exit(code)
