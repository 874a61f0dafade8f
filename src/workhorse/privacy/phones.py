"""Phone numbers, found and validated by `phonenumbers` (the Python port of Google's libphonenumber).

libphonenumber knows each country's numbering plan: which lengths and prefixes are real numbers,
how they are grouped, and which digit runs are dates or times. A number written with its country
code ("+44 20 7946 0958", "0049 30 1234567") is checked against its own country's plan (after a
"+", only for a possible length). One written
nationally ("020 7946 0958", "(11) 91234-5678", "06 12 34 56 78") carries no country, so it is tried
against the plans of `NATIONAL_REGIONS`.

A valid number is not yet a phone number: "48213377" is a valid Danish number and an invoice
number, "2024-03-01" a valid Danish number and a date. So a national number must also be written
the way phone numbers are: behind a trunk prefix (the leading 0 of most countries' national
format) or a bracketed area code, with separators; or in the North American 3-3-4 layout; or
after a word that announces a phone number ("call", "tel", "电话"). A bare digit run with none of
these is left alone, as is anything shaped like a date.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from workhorse.privacy.spans import Span, ascii_digits

KIND = "PHONE"

# Countries whose national formats are recognised without a country code: the largest markets
# across the Americas, Europe, Asia, Africa and Oceania. Each one costs a pass of the matcher over
# each run of digits long enough to be a number, tens of microseconds.
NATIONAL_REGIONS = (
    "US", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "ES", "PT", "IT", "PL", "SE", "RU",
    "IN", "CN", "JP", "KR", "AU", "BR", "MX", "ZA", "NG",
)

_TRUNK_PREFIXED = re.compile(r"\(?0[0-9]")  # 030 …, (020) …, 0412 …
_BRACKETED_AREA = re.compile(r"(?:[0-9][ .-]?)?\([0-9]{1,5}\)")  # (415) …, 8 (912) …
_NORTH_AMERICAN = re.compile(r"(?:1[ .-])?[2-9][0-9]{2}(?P<sep>[ .-])[0-9]{3}(?P=sep)[0-9]{4}")
_DATE = re.compile(
    r"[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2}|[0-9]{1,2}[./-][0-9]{1,2}[./-](?:[0-9]{4}|[0-9]{2})"
)
# Part of something longer: a time or a date before it ("04:51:08 2005", "081110 010354 5184"), a
# host name or an identifier around it ("static-059.45.101.203.example.net").
_GLUED_BEFORE = re.compile(r"[0-9A-Za-z][-._/:]$|[0-9][ ]$")
_GLUED_AFTER = re.compile(r"[-._/:][0-9A-Za-z]")
# North American numbers in their usual layout count even where the area code is not (yet) in
# the library's data, as before it was used.
_NORTH_AMERICAN_ANYWHERE = re.compile(
    r"(?<![0-9A-Za-z+#])(?<![0-9][ .-])(?:1[ .-])?[2-9][0-9]{2}(?P<sep>[ .-])[0-9]{3}(?P=sep)[0-9]{4}(?![0-9A-Za-z]|[.-][0-9])"
)
_ANNOUNCED = re.compile(
    r"(?i:phone|tel|telephone|mobile|cell|call|text|ring|whatsapp|fax|contact|reach)"
    r"(?i:[ \t]+(?:me|us|him|her|them|number|no\.?))?[ \t]*(?:at|on|is|:|：)?[ \t]*$"
    r"|(?:电话|手机|致电|联系|号码)[ \t]*(?:是|为|:|：)?[ \t]*$"
)


@lru_cache(maxsize=1)
def _phonenumbers() -> Any:
    import phonenumbers  # ~40 ms; loaded on the first text that holds enough digits

    return phonenumbers


def valid_numbers(text: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, international) of every number that the plans accept."""
    phonenumbers = _phonenumbers()
    # With a "+", a number names its country; a possible length for that country is enough, as
    # numbering plans change faster than the library's data ("+1 758 …" in a new range).
    for match in phonenumbers.PhoneNumberMatcher(text, "ZZ", leniency=phonenumbers.Leniency.POSSIBLE):
        yield match.start, match.end, True
    for region in NATIONAL_REGIONS:
        # Strict grouping: the digit groups as written must be groups of the country's own format,
        # which "081109 203615 148" (a log's date, time and thread) is not.
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.STRICT_GROUPING):
            # "0049 …" names its country too, but so would a log's "011001": it must pass as national.
            yield match.start, match.end, match.raw_string.startswith("+")


def _written_as_a_phone(text: str, start: int, end: int, international: bool) -> bool:
    """Whether a valid number is written the way phone numbers are (see the module's docstring)."""
    raw = text[start:end]
    if international:
        return True  # its country code was checked with the rest
    if (
        len(ascii_digits(raw)) < 8  # extensions and short codes
        or _DATE.fullmatch(raw)
        or _GLUED_BEFORE.search(text, max(0, start - 2), start)
        or _GLUED_AFTER.match(text, end)
    ):
        return False
    grouped = bool(re.search(r"[0-9][ ./-]+[0-9]", raw))
    if grouped and _TRUNK_PREFIXED.match(raw) or _BRACKETED_AREA.match(raw) or _NORTH_AMERICAN.fullmatch(raw):
        return True
    return _announced(text, start)


def _announced(text: str, start: int) -> bool:
    return bool(_ANNOUNCED.search(text[max(0, start - 24) : start]))


# Where a number might be: a run of digits and the punctuation phone numbers are written with.
# The matchers run on a window around each run of 7 digits or more, not on the whole text: a pass
# of 24 regions over a long text would cost milliseconds.
_DIGIT_RUN = re.compile(r"\+?\(?[0-9][0-9 ()./-]*[0-9]")


def find_phones(text: str) -> list[Span]:
    found: set[tuple[int, int, bool]] = set()
    for run in _DIGIT_RUN.finditer(text):
        if len(ascii_digits(run.group())) < 7:  # no phone number is shorter
            continue
        if run.group().isdigit() and not _announced(text, run.start()):
            continue  # bare digits are a phone number only where the text says so (order numbers)
        low, high = max(0, run.start() - 3), min(len(text), run.end() + 3)  # the matchers check the edges
        found |= {(low + start, low + end, intl) for start, end, intl in valid_numbers(text[low:high])}
    found |= {(match.start(), match.end(), False) for match in _NORTH_AMERICAN_ANYWHERE.finditer(text)}
    return [Span(start, end, KIND) for start, end, intl in sorted(found) if _written_as_a_phone(text, start, end, intl)]
