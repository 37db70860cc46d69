"""URL normalisation for URL-level de-duplication (paper §3.1.1: "we perform URL-level
de-duplication across the entire dataset. We keep the most recent version for pages corresponding
to each URL").

Two URLs that name the same page must get the same key: scheme (http/https) and a leading "www."
are ignored, host and scheme are lowercased, default ports, fragments, empty queries, "index.html"
and trailing slashes are dropped, dot segments are resolved, percent-escapes are made canonical
(unreserved characters decoded, the rest upper-case hex), query parameters are sorted, and tracking
parameters (utm_*, fbclid, gclid, session ids, ...) are removed.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

TRACKING_PARAMS = {"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "yclid", "_ga", "_gl", "igshid",
                   "ref_src", "sessionid", "session_id", "phpsessid", "jsessionid", "sid", "cfid", "cftoken"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_UNRESERVED = "-._~"
_SAFE_PATH = "/:@!$&'()*+,;=" + _UNRESERVED
_INDEX_RE = re.compile(r"/(index|default)\.(html?|php|aspx?)$", re.I)


def _canon_escapes(s: str, safe: str) -> str:
    return quote(unquote(s), safe=safe)


def normalize_url(url: str) -> str:
    """Canonical key of a URL ('' for an empty or unparsable one)."""
    url = (url or "").strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.lower()
    scheme = parts.scheme.lower()
    if scheme == "file":
        return "file://" + posixpath.normpath(unquote(parts.path))
    host = (parts.hostname or "").rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if host and not host.isascii() else host.lower()
    except UnicodeError:
        host = host.lower()
    if host.startswith("www."):
        host = host[4:]
    netloc = f"[{host}]" if ":" in host else host  # IPv6 literal
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    path = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    path = _INDEX_RE.sub("/", path)
    path = _canon_escapes(path, _SAFE_PATH).rstrip("/")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS]
    q = urlencode(sorted(query), doseq=True)
    # http and https name the same document for de-duplication.
    scheme = "https" if scheme in ("http", "https", "") else scheme
    return f"{scheme}://{netloc}{path}" + (f"?{q}" if q else "")
