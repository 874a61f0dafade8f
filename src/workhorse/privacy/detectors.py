"""Detectors of secrets and personal data: each finds the spans of one kind in a text.

A detector is a function ``text -> list[Span]``; `detect` runs the chosen ones and settles overlaps.

The patterns spell out ASCII classes and lookarounds instead of ``\\b`` and ``\\d``: in Python's
Unicode mode a Chinese character is a word character, so ``\\b`` finds no boundary in
"手机13812345678", and ``\\d`` also matches full-width and other scripts' digits.

Numbers that carry a checksum (cards, Chinese ID numbers, IBANs) are reported only when it holds;
that is what keeps order numbers and random digit runs out.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class Span(NamedTuple):
    start: int
    end: int
    kind: str


Detector = Callable[[str], list[Span]]


def _spans(pattern: re.Pattern[str], text: str, kind: str, group: int | str = 0) -> list[Span]:
    return [Span(m.start(group), m.end(group), kind) for m in pattern.finditer(text)]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _candidates(pattern: re.Pattern[str], text: str, accept: Callable[[str], str | None]) -> Iterator[tuple[int, str]]:
    """Matches of `pattern` that `accept` keeps (possibly trimmed to a prefix), searched so that a
    rejected candidate does not hide a valid one starting at a later group of the same run
    (finditer would resume after the whole rejected match)."""
    position = 0
    while (match := pattern.search(text, position)) is not None:
        kept = accept(match.group())
        if kept:
            yield match.start(), kept
            position = match.start() + len(kept)
        else:
            position = match.start() + 1


def _group_prefixes(candidate: str, separators: str, min_length: int) -> Iterator[str]:
    """The candidate, then it without its last group, and so on: a greedy match may have taken
    an unrelated number written after the real one ("4111 1111 1111 1111 123")."""
    yield candidate
    cut = len(candidate)
    while True:
        cut = max(candidate.rfind(sep, 0, cut) for sep in separators)
        if cut <= 0 or len(candidate[:cut].replace(" ", "").replace("-", "")) < min_length:
            return
        yield candidate[:cut]


# --- EMAIL -------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def find_emails(text: str) -> list[Span]:
    return _spans(_EMAIL, text, "EMAIL")


# --- URL ---------------------------------------------------------------------------------------

# RFC 3986 characters, minus the quote: quotes end a URL written inside a string. Non-ASCII ends it
# too, because Chinese text runs straight on after a link ("请访问https://a.cn/x下载").
_URL = re.compile(
    r"(?<![A-Za-z0-9@.])(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]+", re.IGNORECASE
)

_URL_WITH_HOST = re.compile(r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\[]", re.IGNORECASE)


def _trim_url(url: str) -> str:
    """Drop sentence punctuation after a link, and a closing bracket the link did not open."""
    while url:
        last = url[-1]
        if last in ".,;:!?":
            url = url[:-1]
        elif last == ")" and url.count("(") < url.count(")") or last == "]" and url.count("[") < url.count("]"):
            url = url[:-1]
        else:
            break
    return url


def find_urls(text: str) -> list[Span]:
    spans = []
    for match in _URL.finditer(text):
        url = _trim_url(match.group())
        if _URL_WITH_HOST.match(url):  # "www." or "http://" alone, after trimming, is no link
            spans.append(Span(match.start(), match.start() + len(url), "URL"))
    return spans


# --- IP ----------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
# Four octets and nothing dotted around them: "1.2.3" (a version) has three, "1.2.3.4.5" five.
_IPV4 = re.compile(rf"(?<![0-9A-Za-z.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])")
# A loose shape; `ipaddress` decides. It rejects times ("10:30:00") and MAC addresses.
_IPV6_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\.){3}[0-9]{1,3})?"
    r"(?![0-9A-Za-z:]|\.[0-9])"
)


def _is_ipv6(candidate: str) -> bool:
    # Two written groups, one of three hex digits or more: "::1" (loopback) names nobody, and "a::b"
    # is more likely code than an address.
    groups = [group for group in re.split(r"[:.]", candidate) if group]
    if len(groups) < 2 or max(map(len, groups)) < 3:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def find_ips(text: str) -> list[Span]:
    spans = _spans(_IPV4, text, "IP")
    spans += [Span(m.start(), m.end(), "IP") for m in _IPV6_CANDIDATE.finditer(text) if _is_ipv6(m.group())]
    return spans


# --- API_KEY -----------------------------------------------------------------------------------

_KEY_FORMATS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI (and Anthropic) secret keys
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens, classic
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"  # JWT: base64url of '{"' starts the header
    r")(?![A-Za-z0-9_-])"
)
_BEARER = re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]+(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)")
# `OPENAI_API_KEY=…`, `"password": "…"`, `x-api-key: …`, `密码：…`: the value goes, the name stays, so
# the model still knows what the placeholder stood for. Any identifier ending in a key word counts.
_SECRET_NAME = r"(?i:api[_-]?key|access[_-]?key|secret[_-]?key|secret|token|password|passwd|pwd)"
_SECRET_KEY = rf"(?:(?:[A-Za-z0-9]+[_-])*?{_SECRET_NAME}|密码|口令|密钥|令牌)"
_SECRET_CHAR = r"[!#-&(-~]"  # printable ASCII but space and quotes: a bare value ends at either
_SECRET_ASSIGNMENT = re.compile(
    rf"(?<![A-Za-z0-9_-]){_SECRET_KEY}[\"']?[ \t]*(?:[:=：]|是|为)[ \t]*"
    rf"(?:\"(?P<double>[^\"\n]+)\"|'(?P<single>[^'\n]+)'|(?P<bare>{_SECRET_CHAR}{{3,}}))"
)


def find_api_keys(text: str) -> list[Span]:
    spans = _spans(_KEY_FORMATS, text, "API_KEY") + _spans(_BEARER, text, "API_KEY", "value")
    for match in _SECRET_ASSIGNMENT.finditer(text):
        group = next(name for name in ("double", "single", "bare") if match.group(name) is not None)
        spans.append(Span(match.start(group), match.end(group), "API_KEY"))
    return spans


# --- CARD --------------------------------------------------------------------------------------

# Unbroken, in fours (13–19 digits), or Amex/Diners 4-6-5(4). Issuers' first digits are 2–6 (Mastercard 2-series,
# Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay); that keeps "86…" phone numbers out.
_CARD_CANDIDATE = re.compile(
    r"(?<![0-9+])[2-6](?:[0-9]{12,18}"
    r"|[0-9]{3}(?P<sep>[ -])[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{1,4}(?:(?P=sep)[0-9]{1,3})?"
    r"|[0-9]{3}[ -][0-9]{6}[ -][0-9]{4,5})(?![0-9])"
)


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in _digits(number)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return bool(digits) and total % 10 == 0


def _card(candidate: str) -> str | None:
    return next((prefix for prefix in _group_prefixes(candidate, " -", 13) if luhn_valid(prefix)), None)


def find_cards(text: str) -> list[Span]:
    return [Span(start, start + len(card), "CARD") for start, card in _candidates(_CARD_CANDIDATE, text, _card)]


# --- CN_ID -------------------------------------------------------------------------------------

_CN_ID_CANDIDATE = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK_CHARS = "10X98765432"  # indexed by the weighted sum mod 11 (GB 11643, ISO 7064 MOD 11-2)


def cn_id_valid(number: str) -> bool:
    if not re.fullmatch(r"[0-9]{17}[0-9Xx]", number):
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number, _CN_ID_WEIGHTS))
    if _CN_ID_CHECK_CHARS[total % 11] != number[17].upper():
        return False
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not 1900 <= year <= 2099:
        return False
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def find_cn_ids(text: str) -> list[Span]:
    return [Span(m.start(), m.end(), "CN_ID") for m in _CN_ID_CANDIDATE.finditer(text) if cn_id_valid(m.group())]


# --- IBAN --------------------------------------------------------------------------------------

# Compact, or printed in groups of four. Upper case only: that is how IBANs are written, and it keeps
# ordinary words and hashes out.
_IBAN_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![A-Za-z0-9])"
)


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    if not (15 <= len(compact) <= 34 and re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", compact)):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1  # A=10 … Z=35


def _iban(candidate: str) -> str | None:
    return next((prefix for prefix in _group_prefixes(candidate, " ", 15) if iban_valid(prefix)), None)


def find_ibans(text: str) -> list[Span]:
    return [Span(start, start + len(iban), "IBAN") for start, iban in _candidates(_IBAN_CANDIDATE, text, _iban)]


# --- CN_MOBILE ---------------------------------------------------------------------------------

_CN_MOBILE = re.compile(r"(?<![0-9])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])")


def find_cn_mobiles(text: str) -> list[Span]:
    return _spans(_CN_MOBILE, text, "CN_MOBILE")


# --- PHONE -------------------------------------------------------------------------------------

# A loose shape (country code, area code in brackets, digit groups); `_phone` decides. It does not
# start at a later group of a digit sequence ("DE88 3704 0044 0532"), nor after "#" (an order number).
_PHONE_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z+#])(?<![0-9][ ./-])"
    r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,5}\)[ .-]?)?[0-9]{1,12}(?:[ ./-][0-9]{1,12}){0,7}"
    r"(?![0-9A-Za-z])"
)
_NORTH_AMERICAN = re.compile(r"(?:1[-. ])?[2-9][0-9]{2}(?P<sep>[-. ])[0-9]{3}(?P=sep)[0-9]{4}")
# National European style: a trunk 0, one kind of separator. No dots: "01.02.2024" is a date.
_TRUNK_PREFIXED = re.compile(r"0[0-9]{1,4}(?P<sep>[ /-])[0-9]{2,8}(?:(?P=sep)[0-9]{2,8}){0,4}")


def _phone(candidate: str) -> str | None:
    """Digit groups are everywhere (dates, amounts, IDs); only call them a phone number when a
    `+`, a bracketed area code, or a national layout says so."""
    digits = len(_digits(candidate))
    if not 8 <= digits <= 15:
        return None
    if candidate[0] in "+(" or _NORTH_AMERICAN.fullmatch(candidate):
        return candidate
    if digits >= 9 and _TRUNK_PREFIXED.fullmatch(candidate):
        return candidate
    return None


def find_phones(text: str) -> list[Span]:
    return [Span(start, start + len(phone), "PHONE") for start, phone in _candidates(_PHONE_CANDIDATE, text, _phone)]


# --- Optional: names and places through Presidio -----------------------------------------------


@lru_cache(maxsize=1)
def _presidio_analyzer() -> Any | None:
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        logger.warning("presidio_analyzer is not installed; names and places are not redacted")
        return None
    return AnalyzerEngine()  # loads a spaCy model: seconds, hence built once


def find_names_and_places(text: str) -> list[Span]:
    """PERSON and LOCATION spans from Presidio, or none when it is not installed."""
    analyzer = _presidio_analyzer()
    if analyzer is None:
        return []
    results = analyzer.analyze(text=text, entities=["PERSON", "LOCATION"], language="en")
    return [Span(result.start, result.end, result.entity_type) for result in results]


# --- All together ------------------------------------------------------------------------------

DETECTORS: dict[str, Detector] = {
    "EMAIL": find_emails,
    "PHONE": find_phones,
    "CN_MOBILE": find_cn_mobiles,
    "IP": find_ips,
    "URL": find_urls,
    "API_KEY": find_api_keys,
    "CARD": find_cards,
    "CN_ID": find_cn_ids,
    "IBAN": find_ibans,
}
KINDS: tuple[str, ...] = tuple(DETECTORS)

# Which kind wins when two spans of the same length overlap: the one whose detector checked more.
_PRECEDENCE = ("API_KEY", "CN_ID", "IBAN", "CARD", "URL", "EMAIL", "IP", "CN_MOBILE", "PHONE", "PERSON", "LOCATION")


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep the longer of overlapping spans (a URL over the email in its query); on a tie, the more
    specific kind. Returns the kept spans in text order."""
    ranked = sorted(set(spans), key=lambda s: (s.start - s.end, _PRECEDENCE.index(s.kind), s.start))
    kept: list[Span] = []  # disjoint, in text order, so each new span has two neighbours to check
    for span in ranked:
        at = bisect.bisect_left(kept, span)
        if (at == 0 or kept[at - 1].end <= span.start) and (at == len(kept) or span.end <= kept[at].start):
            kept.insert(at, span)
    return kept


def detect(text: str, kinds: Iterable[str] | None = None, *, use_presidio: bool = False) -> list[Span]:
    chosen = KINDS if kinds is None else tuple(kinds)
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds of private data {unknown}; known: {', '.join(KINDS)}")
    spans = [span for kind in chosen for span in DETECTORS[kind](text) if span.end > span.start]
    if use_presidio:
        spans += find_names_and_places(text)
    return resolve_overlaps(spans)
