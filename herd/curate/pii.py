"""PII masking and blocked domains (paper §3.1.1, "PII and safety filtering": "filters designed to
remove data from websites likely to contain unsafe content or high volumes of PII, domains that have
been ranked as harmful ... and domains that are known to contain adult content").

Masks, each replaced by a fixed tag so the text stays readable: e-mail addresses -> [EMAIL],
phone numbers (9-15 digits in phone shape) -> [PHONE], IPv4/IPv6 addresses -> [IP], payment card
numbers (13-19 digits that pass the Luhn check) -> [CARD], IBANs (ISO 13616 mod-97 check) -> [IBAN].
The checksums keep ordinary long numbers (ids, ISBNs, timestamps) unmasked.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from herd.errors import HerdError

EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
                      r"(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Not inside a longer dotted number (1.2.3.4.5); a sentence's full stop after it is fine ("ping 10.0.0.1.").
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
IPV6_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
PHONE_RE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?"
                      r"\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w])"
                      r"|(?<![\w+])\+\d{9,15}(?!\w)")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _mask_cards(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def _mask_iban(m: re.Match) -> str:
    return "[IBAN]" if iban_ok(m.group(0)) else m.group(0)


def _mask_ipv4(m: re.Match) -> str:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return m.group(0)
    return "[IP]"


def _mask_ipv6(m: re.Match) -> str:
    s = m.group(0)
    if s.count(":") < 2 or len(s) < 7:  # slices like x[1::2] are valid IPv6 but not addresses
        return s
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return s
    return "[IP]"


def _mask_phone(m: re.Match) -> str:
    s = m.group(0)
    digits = sum(c.isdigit() for c in s)
    if not 9 <= digits <= 15:
        return s
    # Dates (2024-01-02), decimal numbers and version strings are not phones.
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s) or re.fullmatch(r"[\d.]+", s):
        return s
    return "[PHONE]"


def mask_pii(text: str, emails=True, phones=True, ips=True, cards=True, ibans=True) -> tuple[str, dict]:
    """Masked text and the number of masks of each kind."""
    counts = {}

    def run(name, regex, fn, s):
        out, n = regex.subn(lambda m: fn(m), s)
        # subn counts matches, not masks: count the tags that were actually put in
        tag = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}[name]
        added = out.count(tag) - s.count(tag)
        if added:
            counts[name] = counts.get(name, 0) + added
        return out

    if ibans and re.search(r"[A-Z]{2}\d{2}", text):
        text = run("iban", IBAN_RE, _mask_iban, text)
    if cards:
        text = run("card", CARD_RE, _mask_cards, text)
    if emails and "@" in text:
        text = run("email", EMAIL_RE, lambda m: "[EMAIL]", text)
    if ips:
        text = run("ip", IPV4_RE, _mask_ipv4, text)
        if "::" in text or text.count(":") > 2:
            text = run("ip", IPV6_RE, _mask_ipv6, text)
    if phones:
        text = run("phone", PHONE_RE, _mask_phone, text)
    return text, counts


def load_blocked_domains(domains: list[str], file: str = "") -> frozenset[str]:
    out = {d.strip().lower().lstrip(".") for d in domains if d.strip()}
    if file:
        p = Path(file)
        if not p.is_file():
            raise HerdError(f"pii.blocked_domains_file not found: {p}")
        for line in p.read_text().splitlines():
            line = line.split("#", 1)[0].strip().lower()
            if line:
                out.add(line.lstrip("."))
    return frozenset(out)


def url_host(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def is_blocked(url: str, blocked: frozenset[str]) -> bool:
    """True if the URL's host is a blocked domain or a subdomain of one."""
    if not blocked or not url:
        return False
    host = url_host(url)
    parts = host.split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts)))
