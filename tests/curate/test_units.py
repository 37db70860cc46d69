"""Unit tests: URL normalisation, line-bucket dedup, each heuristic, PII masks on generated identities,
MinHash LSH, mix rates, recipe parsing."""

import random
import string

import pytest

from herd.curate import heuristics as H
from herd.curate.config import HeuristicsConfig, load_recipe
from herd.curate.dedup import MinHashLSH, line_dedup_buckets, minhash_signature
from herd.curate.pii import iban_ok, is_blocked, luhn_ok, mask_pii
from herd.curate.pipeline import mix_rates
from herd.curate.urls import normalize_url
from herd.errors import HerdError


# ---- URL normalisation --------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [
    ("HTTP://WWW.Example.COM:80/a/./b/../c/index.html?utm_source=x&b=2&a=1#frag",
     "https://example.com/a/c?a=1&b=2"),
    ("https://example.com/path/", "http://example.com/path"),
    ("http://example.com/%7euser", "https://example.com/~user"),
    ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
    ("https://example.com/?fbclid=123", "https://example.com"),
    ("https://example.com:443/x?b=1&a=2&gclid=z", "https://example.com/x?a=2&b=1"),
    ("http://BÜCHER.de/x", "https://xn--bcher-kva.de/x"),
])
def test_normalize_url_equivalent(a, b):
    assert normalize_url(a) == normalize_url(b)


@pytest.mark.parametrize("a,b", [
    ("https://example.com/a", "https://example.com/b"),
    ("https://example.com/a?id=1", "https://example.com/a?id=2"),
    ("https://example.com:8080/a", "https://example.com/a"),
    ("https://a.example.com/", "https://b.example.com/"),
    ("https://example.com/A", "https://example.com/a"),  # paths are case-sensitive
])
def test_normalize_url_distinct(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_normalize_url_edge_cases():
    assert normalize_url("") == ""
    assert normalize_url("http://[::1]:8080/x") == "https://[::1]:8080/x"
    assert normalize_url("file:///tmp/a/../b.html") == "file:///tmp/b.html"
    assert normalize_url("http://[bad") == "http://[bad"  # unparsable: kept verbatim, lower-cased


# ---- line-level dedup ---------------------------------------------------------------------------
def test_line_bucket_dedup_counts_within_buckets():
    boiler = "Share this article on social media"
    docs = []
    for i in range(20):
        lines = [f"unique content line {i} about topic {i * 7}"]
        if i < 7:  # 7 occurrences in bucket 0 (docs 0-9): removed (> 6)
            lines.append(boiler)
        if 10 <= i < 16:  # 6 occurrences in bucket 1: kept (not > 6)
            lines.append("Six times is allowed here")
        docs.append("\n".join(lines))
    out, removed = line_dedup_buckets(docs, bucket_docs=10, max_occurrences=6)
    assert removed == 7
    assert all(boiler not in d for d in out[:10])
    assert sum("Six times is allowed here" in d for d in out) == 6
    # The same 7 lines spread over two buckets of 5 stay: counts are per bucket.
    out2, removed2 = line_dedup_buckets(docs[:10], bucket_docs=5, max_occurrences=6)
    assert removed2 == 0
    # Unique lines are never touched.
    assert all(f"unique content line {i} " in out[i] for i in range(20))


# ---- heuristics ---------------------------------------------------------------------------------
PROSE = ("The committee met on Tuesday to review the budget proposal for the coming year. Members raised "
         "questions about infrastructure spending, school funding and the long-term pension obligations of "
         "the city. After a lengthy debate the proposal was sent back to the finance office with a request "
         "for more detail on revenue projections, and a final vote is expected next month once the revised "
         "figures are available to the public and to the press.")


def test_heuristic_duplicate_lines_and_ngrams():
    cfg = HeuristicsConfig(kl=False)
    assert H.check(PROSE, cfg, "en", "general")[0] is None
    log = "\n".join(["ERROR connection refused retrying in 5 seconds"] * 30 + [PROSE])
    reason, vals = H.check(log, cfg, "en", "general")
    assert reason == "dup_line_frac" and vals["dup_line_frac"] > 0.9
    dl, dc = H.dup_line_stats("a b\nc d\na b\na b")
    assert dl == pytest.approx(0.5) and dc == pytest.approx(6 / 12)
    w = "the cat sat on the mat the cat sat on the mat".split()
    assert H.top_ngram_char_frac(w, 2) == pytest.approx(2 * 6 / 34)  # "the cat" x2 of 34 characters
    # the second copy of the 6-word phrase (17 of 34 characters) is covered by repeated 5-grams
    assert H.dup_ngram_char_frac(w, 5) == pytest.approx(17 / 34)
    rep = " ".join([PROSE] * 3)
    assert H.check(rep, cfg, "en", "general")[0].startswith(("top_", "dup_"))


def test_heuristic_dirty_words():
    cfg = HeuristicsConfig(kl=False)
    wl = H.dirty_words("en")
    assert len(wl) > 100 and H.dirty_words("xx") == frozenset()
    bad_word = sorted(w for w in wl if w.isalpha())[0]
    w = PROSE.split()
    for i in range(10):  # spread out, so no repeated n-gram trips the repetition rules first
        w.insert(i * 8 + 3, bad_word)
    text = " ".join(w)
    assert H.dirty_word_ratio(text, wl) == pytest.approx(10 / len(w), rel=0.05)
    assert H.check(text, cfg, "en", "general")[0] == "dirty_words"
    assert H.check(text, cfg, "fr", "multilingual")[0] is None  # no French list configured


def test_heuristic_shape_rules():
    cfg = HeuristicsConfig(kl=False)
    assert H.check("too short to keep", cfg, "en", "general")[0] == "too_few_words"
    assert H.check("too short to keep", cfg, "en", "code")[0] is None  # shape rules judge prose only
    from curate_testutil import sotu_chunks

    words = sotu_chunks(1, words=600)[0].split()
    lines = [" ".join(words[i:i + 8]) for i in range(0, 480, 8)]
    bullets = "\n".join(f"- {ln}" for ln in lines)
    assert H.check(bullets, cfg, "en", "general")[0] == "bullet_lines"
    assert H.check("\n".join(lines), cfg, "en", "general")[0] is None
    long_lines = [" ".join(words[i:i + 16]) for i in range(0, 480, 16)]
    ell = "\n".join(f"{ln}..." for ln in long_lines)
    assert H.check(ell, cfg, "en", "general")[0] == "ellipsis_lines"
    sym = " ".join(f"#{w}" if i % 4 == 0 else w for i, w in enumerate(words))
    assert H.check(sym, cfg, "en", "general")[0] == "symbol_word_ratio"
    nums = " ".join(str(i * 7919) for i in range(80))
    assert H.check(nums, cfg, "en", "general")[0] in ("alpha_word_frac", "mean_word_len")
    longw = " ".join("".join(random.Random(i).choices(string.ascii_lowercase, k=14)) for i in range(80))
    assert H.check(longw, cfg, "en", "general")[0] == "mean_word_len"
    giant = "x" * 200_000
    assert H.check(giant, cfg, "en", "code")[0] == "max_line_chars"


def test_heuristic_token_kl():
    from herd.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.llama3()
    corpus = [PROSE] * 5 + ["Another ordinary sentence about the weather and the city council meeting."] * 5
    counts = sum(H.token_counts(t, tok, tok.n_words) for t in corpus)
    kl = H.KLScorer(counts, tok)
    normal, n1 = kl(PROSE)
    rng = random.Random(0)
    junk = "".join(rng.choice(string.ascii_letters + string.digits + "+/=") for _ in range(600))
    outlier, n2 = kl(junk)
    assert n1 > 20 and n2 > 20 and outlier > normal + 3
    cfg = HeuristicsConfig(max_kl=(normal + outlier) / 2)
    assert H.check(junk, cfg, "en", "code", kl)[0] == "token_kl"
    assert H.check(PROSE, cfg, "en", "general", kl)[0] is None


# ---- PII ----------------------------------------------------------------------------------------
def _luhn_complete(prefix: str, length: int, rng) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def _iban(country: str, bban: str) -> str:
    num = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(num) % 97
    return f"{country}{check:02d}{bban}"


def test_pii_masks_generated_identities():
    rng = random.Random(42)
    first = ["maria", "john", "wei", "fatima", "olga", "pierre", "ana", "kenji"]
    last = ["smith", "garcia", "chen", "okafor", "ivanova", "dubois", "silva", "tanaka"]
    for i in range(40):
        f, la = rng.choice(first), rng.choice(last)
        email = f"{f}.{la}{rng.randint(1, 99)}@{rng.choice(['mail.com', 'example.org', 'uni.edu.au'])}"
        phone = rng.choice([f"+1 {rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                            f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                            f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                            f"+33{rng.randint(100000000, 999999999)}"])
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        ip6 = ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8))
        card = _luhn_complete(rng.choice(["4", "51", "37", "6011"]), rng.choice([15, 16]), rng)
        card_fmt = " ".join(card[j:j + 4] for j in range(0, len(card), 4))
        iban = rng.choice([_iban("DE", "".join(rng.choices(string.digits, k=18))),
                           _iban("GB", "WEST" + "".join(rng.choices(string.digits, k=14))),
                           _iban("FR", "".join(rng.choices(string.digits, k=23)))])
        assert iban_ok(iban)
        text = (f"Customer {f.title()} {la.title()} wrote from {email}, call {phone}. Logged in from {ip} "
                f"and {ip6}. Paid with card {card_fmt}; refund to IBAN {iban}. Order 2024-03-15, v3.11.4.")
        masked, counts = mask_pii(text)
        for secret in (email, phone, ip, ip6, card_fmt, iban):
            assert secret not in masked, (secret, masked)
        assert counts == {"email": 1, "phone": 1, "ip": 2, "card": 1, "iban": 1}, (counts, masked)
        assert f"Customer {f.title()} {la.title()}" in masked
        assert "2024-03-15" in masked and "v3.11.4" in masked


def test_pii_leaves_non_pii_alone():
    rng = random.Random(1)
    card = _luhn_complete("4", 16, rng)
    bad_card = card[:-1] + str((int(card[-1]) + 1) % 10)
    text = (f"Not a card {bad_card}. ISBN 978-3-16-148410-0. Pi is 3.14159265358979. Version 1.2.3.4.5 "
            f"and slices x[1::2]. Time 12:30:45. Year 1999. Bad IBAN DE00123456781234567890. 999.999.999.999")
    masked, counts = mask_pii(text)
    assert masked == text and counts == {}
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_blocked_domains():
    blocked = frozenset({"bad.example", "adult.test"})
    assert is_blocked("https://bad.example/x", blocked)
    assert is_blocked("http://www.sub.BAD.example:8080/x", blocked)
    assert not is_blocked("https://notbad.example/x", blocked)
    assert not is_blocked("", blocked) and not is_blocked("https://bad.example/", frozenset())


# ---- MinHash LSH, mix, recipe ------------------------------------------------------------------
def test_minhash_lsh_planted_duplicates():
    from curate_testutil import edit_words, sotu_chunks

    rng = random.Random(0)
    docs = sotu_chunks(30)
    lsh = MinHashLSH(128, 16, 0.8)
    for i, d in enumerate(docs):
        assert lsh.add(i, minhash_signature(d)) is None  # distinct speeches are all kept
    assert lsh.add(100, minhash_signature(edit_words(docs[3], 0.01, rng))) == 3
    assert lsh.add(101, minhash_signature(docs[7])) == 7
    assert lsh.add(102, minhash_signature(edit_words(docs[5], 0.5, rng))) is None


def test_mix_rates_hit_the_weights():
    w = {"general": 0.5, "math-reasoning": 0.25, "code": 0.17, "multilingual": 0.08}
    counts = {"general": 1000, "math-reasoning": 100, "code": 400, "multilingual": 300}
    rates, target = mix_rates(counts, w)
    kept = {k: counts[k] * rates[k] for k in counts}
    tot = sum(kept.values())
    for k in w:
        assert kept[k] / tot == pytest.approx(w[k], rel=1e-6)
    assert rates["math-reasoning"] == pytest.approx(1.0)  # the scarcest domain is kept whole
    rates, target = mix_rates({"general": 10, "code": 10}, w)  # absent domains: renormalised
    assert target == pytest.approx({"general": 0.5 / 0.67, "code": 0.17 / 0.67})


def test_recipe_errors(tmp_path):
    with pytest.raises(HerdError, match="config file not found"):
        load_recipe(tmp_path / "none.toml")
    (tmp_path / "a.toml").write_text("[dedup\nx=1")
    with pytest.raises(HerdError, match="not valid TOML"):
        load_recipe(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[nosuchstage]\nx = 1\n")
    with pytest.raises(HerdError, match="unknown field nosuchstage"):
        load_recipe(tmp_path / "b.toml")
    with pytest.raises(HerdError, match="dedup.num_perm must be an integer"):
        load_recipe(None, ["dedup.num_perm=lots"])
    with pytest.raises(HerdError, match="mix.weights.code must be a number"):
        load_recipe(None, ['--mix.weights', '{general = 1.0, code = "x"}'])
    cfg = load_recipe(None, ["dedup.threshold=0.7", "langid.languages=[\"en\", \"fr\"]", "mix.enabled=false"])
    assert cfg.dedup.threshold == 0.7 and cfg.langid.languages == ["en", "fr"] and not cfg.mix.enabled
    cfg = load_recipe("default", ["--langid.languages", "en,fr", "--mix.weights", '{"general": 1.0}'])
    assert cfg.langid.languages == ["en", "fr"] and cfg.mix.weights == {"general": 1.0}  # a table is replaced


def test_mix_sampling_does_not_depend_on_where_the_files_lie():
    """The mix keeps or drops a document by a hash of its text, not of its id (which holds the
    input file's path): the same input curated from two directories gives the same sample."""
    from herd.curate.pipeline import _mix_key, _uniform

    a = {"id": "/tmp/run1/raw/wiki.jsonl#7", "text": "The same document."}
    b = {"id": "/home/u/run2/raw/wiki.jsonl#7", "text": "The same document."}
    c = {"id": "/tmp/run1/raw/wiki.jsonl#7", "text": "Another document."}
    assert _uniform(_mix_key(a), 3) == _uniform(_mix_key(b), 3)
    assert _uniform(_mix_key(a), 3) != _uniform(_mix_key(c), 3)
    assert _uniform(_mix_key(a), 3) != _uniform(_mix_key(a), 4)
