"""Detectors of secrets and personal data: each finds the spans of one kind in a text.

A detector is a function ``text -> list[Span]``; `detect` runs the chosen ones and settles overlaps.

The patterns spell out ASCII classes and lookarounds instead of ``\\b`` and ``\\d``: in Python's
Unicode mode a Chinese character is a word character, so ``\\b`` finds no boundary in
"手机13812345678", and ``\\d`` also matches full-width and other scripts' digits.

Numbers that carry a checksum (cards, Chinese ID numbers, IBANs) are reported only when it holds;
that is what keeps order numbers and random digit runs out.

Credentials (kind API_KEY) are found in `secrets`, phone numbers in `phones`: both lean on a
maintained library, and their docstrings say which and why.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import logging
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from workhorse.privacy.phones import find_phones
from workhorse.privacy.secrets import find_secrets
from workhorse.privacy.spans import Detector, Span, ascii_digits, candidates, group_prefixes, spans_of

logger = logging.getLogger(__name__)

# --- EMAIL -------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


# "postgres://admin:pw@db.internal" holds no address: it is a password and a host (`secrets`).
_URI_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:[^\s/?#]*$")


def find_emails(text: str) -> list[Span]:
    spans = spans_of(_EMAIL, text, "EMAIL")
    return [span for span in spans if not _URI_USER.search(text[max(0, span.start - 100) : span.start])]


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
    spans = spans_of(_IPV4, text, "IP")
    spans += [Span(m.start(), m.end(), "IP") for m in _IPV6_CANDIDATE.finditer(text) if _is_ipv6(m.group())]
    return spans


# --- API_KEY: see `secrets` ----------------------------------------------------------------------

# --- CARD --------------------------------------------------------------------------------------

# Unbroken, in fours (13–19 digits; spaces, dashes or dots between), or Amex/Diners 4-6-5(4).
# Issuers' first digits are 2–6 (Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard,
# Discover/UnionPay); that keeps "86…" phone numbers out. Digits glued to a name
# ("blk_-6952295868487656571", a log's block id) are no card.
_CARD_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z_+])(?<![A-Za-z_]-)[2-6](?:[0-9]{12,18}"
    r"|[0-9]{3}(?P<sep>[ .-])[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{1,4}(?:(?P=sep)[0-9]{1,3})?"
    r"|[0-9]{3}(?P<sep2>[ .-])[0-9]{6}(?P=sep2)[0-9]{4,5})(?![0-9]|\.[0-9])"
)


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in ascii_digits(number)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return bool(digits) and total % 10 == 0


def _card(candidate: str) -> str | None:
    return next((prefix for prefix in group_prefixes(candidate, " -.", 13) if luhn_valid(prefix)), None)


def find_cards(text: str) -> list[Span]:
    return [Span(start, start + len(card), "CARD") for start, card in candidates(_CARD_CANDIDATE, text, _card)]


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

# Each country's IBAN length, from the ISO 13616 registry. A candidate must name one of these
# countries and have its length, then pass mod 97: that keeps hashes and codes out even when the
# IBAN is written in lower case.
_IBAN_LENGTHS = {
    country: int(length)
    for country, length in (
        entry.split(":")
        for entry in (
            "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21 CR:22 CY:28 CZ:24 "
            "DE:22 DJ:27 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 "
            "GT:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 LI:21 LT:20 LU:20 "
            "LV:21 LY:25 MC:27 MD:24 ME:22 MK:19 MN:20 MR:27 MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 PL:28 "
            "PS:29 PT:25 QA:29 RO:24 RS:22 RU:33 SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 SO:23 ST:25 SV:28 "
            "TL:23 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20 YE:30"
        ).split()
    )
}
# Compact, or printed in groups of four; upper or lower case, not mixed within a group of letters.
_IBAN_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])(?:[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"
    r"|[a-z]{2}[0-9]{2}(?:[a-z0-9]{11,30}|(?: [a-z0-9]{4}){2,7}(?: [a-z0-9]{1,4})?))(?![A-Za-z0-9])"
)


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1  # A=10 … Z=35


def _iban(candidate: str) -> str | None:
    return next((prefix for prefix in group_prefixes(candidate, " ", 15) if iban_valid(prefix)), None)


def find_ibans(text: str) -> list[Span]:
    return [Span(start, start + len(iban), "IBAN") for start, iban in candidates(_IBAN_CANDIDATE, text, _iban)]


# --- CN_MOBILE ---------------------------------------------------------------------------------

_CN_MOBILE = re.compile(r"(?<![0-9])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])")


def find_cn_mobiles(text: str) -> list[Span]:
    return spans_of(_CN_MOBILE, text, "CN_MOBILE")


# --- PHONE: see `phones` --------------------------------------------------------------------------

# --- SSN ---------------------------------------------------------------------------------------

# A US Social Security number, written 3-2-4 with dashes or spaces, in the ranges the SSA issues:
# no area 000, 666 or 9xx, no group 00, no serial 0000. Nine bare digits are an SSN only where
# the text says so ("SSN 123456789"): otherwise they are any number.
_SSN_RANGES = r"(?!000|666|9)[0-9]{3}(?P<sep>SEP)(?!00)[0-9]{2}(?P=sep)(?!0000)[0-9]{4}"
_SSN = re.compile(r"(?<![0-9-])" + _SSN_RANGES.replace("SEP", "[ -]") + r"(?![0-9]|-[0-9])")
_SSN_ANNOUNCED = re.compile(
    r"(?<![A-Za-z])(?i:ssn|ss#|social security(?: number| no\.?)?)[ \t]*(?:is|:|#|no\.?)?[ \t]*"
    r"(?P<number>" + _SSN_RANGES.replace("SEP", "[ -]?") + r")(?![0-9])"
)


def find_ssns(text: str) -> list[Span]:
    return spans_of(_SSN, text, "SSN") + spans_of(_SSN_ANNOUNCED, text, "SSN", "number")


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
    "API_KEY": find_secrets,
    "CARD": find_cards,
    "CN_ID": find_cn_ids,
    "IBAN": find_ibans,
    "SSN": find_ssns,
}
KINDS: tuple[str, ...] = tuple(DETECTORS)

# Which kind wins when two spans of the same length overlap: the one whose detector checked more.
_PRECEDENCE = (
    "API_KEY", "CN_ID", "IBAN", "CARD", "SSN", "URL", "EMAIL", "IP", "CN_MOBILE", "PHONE", "PERSON", "LOCATION",
)


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
