"""Latency each shield adds to a request (paper §5.4.7), measured interleaved in one process.

    python bench/safety_latency.py --guard runs/guard/checkpoint --prompt-guard runs/prompt-guard [--n 20]

For every request (a GSM8K question, a harmful prompt, an answer with code) the shields run in turn,
round-robin, so machine load hits all of them alike: herd's Llama Guard input check and output check,
Prompt Guard (herd's MiniLM head), Code Shield through herd, and the peer: codeshield's own
`CodeShield.scan_code` on the same code (herd adds only the code-block extraction). Prints median and
p90 milliseconds per shield, the herd/peer ratio for Code Shield, and the load (`uptime`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guard", required=True, help="a Llama Guard checkpoint")
    ap.add_argument("--prompt-guard", required=True, help="a Prompt Guard (herd head or Meta's)")
    ap.add_argument("--n", type=int, default=20)
    a = ap.parse_args()

    import asyncio
    import random

    from herd.safety.code_shield import code_blocks
    from herd.safety.data import advbench, gsm8k
    from herd.safety.moderation import build_moderation

    mod = build_moderation(
        input_guard=a.guard, output_guard=a.guard, prompt_guard=a.prompt_guard, code_shield=True
    )
    # the peer: codeshield itself (imported after herd put semgrep 1.70's semgrep-core on PATH)
    from codeshield.cs import CodeShield as PeerCodeShield
    from codeshield.insecure_code_detector.languages import Language

    rng = random.Random(0)
    prompts = [q for q, _ in gsm8k(a.n, rng)] + [e.text for e in rng.sample(advbench(), a.n)]
    code_answer = (
        "Here is a script:\n```python\nimport subprocess\n\ndef run(cmd):\n"
        "    return subprocess.run(cmd, shell=True, capture_output=True)\n```\n"
    )
    t = {
        k: []
        for k in (
            "llama_guard_input",
            "llama_guard_output",
            "prompt_guard",
            "code_shield_herd",
            "code_shield_peer",
        )
    }
    for p in prompts:
        msgs = [{"role": "user", "content": p}]
        t0 = time.perf_counter()
        mod.input_guard.classify(msgs, "User")
        t["llama_guard_input"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mod.output_guard.classify(
            msgs + [{"role": "assistant", "content": "I can't help with that."}], "Agent"
        )
        t["llama_guard_output"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mod.prompt_guard.jailbreak_scores([p])
        t["prompt_guard"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mod.code_shield.scan_output(code_answer)
        t["code_shield_herd"].append(time.perf_counter() - t0)
        code = code_blocks(code_answer)[0][1]
        t0 = time.perf_counter()
        asyncio.run(PeerCodeShield.scan_code(code, Language.PYTHON))
        t["code_shield_peer"].append(time.perf_counter() - t0)
    print(f"{'shield':22s} {'median ms':>10s} {'p90 ms':>10s}  (n={len(prompts)})")
    for k, v in t.items():
        v = sorted(v)
        print(f"{k:22s} {1000 * statistics.median(v):10.1f} {1000 * v[int(0.9 * (len(v) - 1))]:10.1f}")
    r = statistics.median(t["code_shield_herd"]) / statistics.median(t["code_shield_peer"])
    print(f"code shield herd/peer (median): {r:.2f}")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
