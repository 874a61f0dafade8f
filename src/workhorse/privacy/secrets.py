"""Credentials (API keys, tokens, passwords, private keys, session cookies), all of kind API_KEY.

Three kinds of evidence, each covering what the others cannot:

1. **Vendor formats**, from the rule catalog of `kingfisher-secret-scanner` (MongoDB's Kingfisher,
   Apache-2.0): about 460 Betterleaks rules, the maintained successor of the gitleaks rule set,
   and the Veles detectors of Google's OSV-SCALIBR, compiled into one Vectorscan database and run
   in-process. A scan of a support message takes microseconds. The package is a dependency, so the
   rules are upgraded with it rather than copied here. A few formats are also spelled out below
   (`_KEY_FORMATS`), because the catalog rightly skips documentation values such as AWS's
   ``AKIAIOSFODNN7EXAMPLE`` and a redactor should not.
2. **Context**: a value after a name that says it is a secret, in any casing or layout
   (``PGPASSWORD=``, ``clientSecret:``, ``"SecretAccessKey": "…"``, ``--password x``, the value on
   the line after ``password:``), the credentials of an ``Authorization`` header, cookie values,
   the password of any ``scheme://user:password@host`` URI, and the body of a PEM private key.
   The name stays and the value goes, so the model still knows what the placeholder stood for.
3. **Shape**: a long token that looks random (mixed character classes that keep switching, as
   no word or identifier does), which is how bare AWS secret keys and unknown vendors' keys look.

Alternatives weighed: Yelp's `detect-secrets` (and Bridgecrew's fork `bc-detect-secrets`) has 27
plugins run as Python regexes line by line, and its entropy plugins look at quoted strings only
(outside config files): with its default plugins and filters it catches 40 % of the generated
corpus of `tests/test_privacy_formats.py`, at about 1 ms a text, where this module removes 99.7 %
(`benchmarks/redaction_coverage.py --detect-secrets`). `credsweeper` pulls in onnxruntime, pandas
and lxml; `ggshield` sends text to a hosted service, which is what this module exists to avoid;
`whispers` reads structured files only; the `trufflehog` package on PyPI is the abandoned 2.x line.
See docs/redaction.md.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING

from workhorse.paths import workhorse_home
from workhorse.privacy.spans import Span, spans_of

if TYPE_CHECKING:
    from kingfisher_sdk import Scanner

KIND = "API_KEY"

# --- 1. Vendor formats ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _vendor_scanner() -> Scanner:
    """The compiled catalog, built once per process. Imported here, not at module load, so that
    `workhorse --help` does not load a 36 MB native library; compiling takes ~2.5 s the first time
    and ~0.25 s after, from the cache kept in the workhorse home."""
    from kingfisher_sdk import Rules, Scanner

    rules = Rules(confidence="low", cache_dir=workhorse_home() / "secret-rules")  # "low": the whole catalog
    # base64: a secret inside a base64 blob (a Kubernetes manifest) makes the whole blob go.
    return Scanner(rules, base64=True)


def prepare() -> None:
    """Compile the catalog now, so that the first redaction does not spend an escalation's time
    budget on it."""
    _vendor_scanner()


_PEM_MARKERS = re.compile(
    r"(-----BEGIN [A-Z0-9 ]+-----(?:\\n|\s)*)(?:.*?)((?:\\n|\s)*-----END [A-Z0-9 ]+-----)?", re.DOTALL
)


def find_vendor_tokens(text: str) -> list[Span]:
    data = text.encode("utf-8")
    spans = []
    for finding in _vendor_scanner().scan(data):
        # Every finding counts, including the catalog's "invisible" helpers (an AWS secret key
        # seen without its key id): for a redactor, half a credential is still a credential.
        location = finding.location
        start, end = location["start_offset"], location["end_offset"]
        if len(data) != len(text):  # offsets are in UTF-8 bytes; ours are in characters
            start, end = len(data[:start].decode("utf-8", "ignore")), len(data[:end].decode("utf-8", "ignore"))
        if (markers := _PEM_MARKERS.fullmatch(text, start, end)) is not None:
            # A whole PEM block: the BEGIN and END lines stay, as `find_private_keys` leaves them.
            start, end = markers.end(1), markers.start(2) if markers.group(2) is not None else end
        if end > start:
            spans.append(Span(start, end, KIND))
    return spans


_AWS_KEY_ID = "(?:A3T[A-Z0-9]|AKIA|ASIA|AROA|AIDA|AGPA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[0-9A-Z]{16}"
_KEY_FORMATS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI (and Anthropic) secret keys
    rf"|{_AWS_KEY_ID}"  # AWS key ids: access keys (AKIA), temporary (ASIA), roles, users, groups…
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens, classic
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"  # JWT: base64url of '{"' starts the header
    r"|django-insecure-[!#-&(-~]{20,}"  # Django's generated SECRET_KEY
    r")(?![A-Za-z0-9_-])"
)

# --- 2. Context ----------------------------------------------------------------------------------

# A name names a secret when, lower-cased without separators, it ends in one of these words:
# PGPASSWORD, SecretAccessKey, clientSecret, x-api-key, OPENAI_API_KEY all do; max_tokens does not.
_SECRET_ENDINGS = (
    "password", "passwd", "passphrase", "passcode", "pwd", "secret", "token", "apikey", "accesskey",
    "secretkey", "privatekey", "signingkey", "encryptionkey", "masterkey", "licensekey", "authkey",
    "credential", "credentials", "sessionid",
)
# Short words that name a secret only as the last word of a longer name (DB_PASS, smtpPin): alone,
# or inside one word ("bypass", "spin"), they mean something else.
_SECRET_LAST_WORDS = frozenset({"pass", "pin", "pat", "psk"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def names_a_secret(name: str) -> bool:
    if re.sub(r"[^a-z0-9]", "", name.lower()).endswith(_SECRET_ENDINGS):
        return True
    words = _WORDS.findall(name)
    return len(words) > 1 and words[-1].lower() in _SECRET_LAST_WORDS


# A bare value runs to a space, a quote or a backtick; a connection string's or a query's next field
# (`Pwd=x;Server=…`, `token=x&user=…`) ends it too, see `_trim`.
_BARE_VALUE = r"[!#-&(-_a-~]{3,}"
_QUOTED_VALUE = r"\"(?P<double>[^\"\n]+)\"|'(?P<single>[^'\n]+)'"
_NAME = r"(?<![A-Za-z0-9_.-])(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]{0,80})"  # "2faTotpSecret" too
# The value is matched in a lookahead, so that the search resumes inside it: in
# "config: api_key=…", "config" is a name whose value holds the next name.
_ASSIGNMENT = re.compile(
    rf"{_NAME}[\"']?[ \t]*(?:=>|:=|[:=：])(?="
    # The value may stand on the next line ("Password:\n  hunter2"), unless that line is itself
    # a `name:` (the name was a mapping's header, as in "credentials:\n  user: bob").
    r"(?:[ \t]*\r?\n(?![ \t]*[A-Za-z0-9_.-]+[\"']?[ \t]*[:=]))?[ \t]*"
    rf"(?:{_QUOTED_VALUE}|(?P<bare>{_BARE_VALUE})))"
)
_CHINESE_ASSIGNMENT = re.compile(
    rf"(?:密码|口令|密钥|令牌|验证码)[ \t]*(?:[:=：]|是|为)[ \t]*(?:{_QUOTED_VALUE}|(?P<bare>{_BARE_VALUE}))"
)
# A URI's query parameters that carry credentials under a short name: "?key=…" (Google's APIs),
# "&sig=…" (Azure shared access signatures), "?auth=…", "?code=…" (an OAuth grant).
_QUERY = re.compile(r"[?&;](?i:key|sig|signature|auth|code)=(?P<bare>[^&#\s\"'<>]{3,})")
_FLAG = re.compile(
    rf"(?<![A-Za-z0-9_-])--?(?P<name>[A-Za-z][A-Za-z0-9_-]*)(?:=|[ \t]+)"
    rf"(?=(?:{_QUOTED_VALUE}|(?P<bare>(?!-){_BARE_VALUE})))"
)
# Prose: "my password is hunter2", "the PIN is 4821". Only a value that holds a digit or a symbol
# counts, which "my password is wrong" does not.
_TOLD = re.compile(
    r"(?<![A-Za-z])(?i:password|passcode|passphrase|pin(?: code| number)?|pwd)[ \t]+(?i:is|was)[ \t]+"
    r"(?P<bare>[!#-~]{4,})"
)
# Values that are no secret: references to one (`${DB_PASSWORD}`, `%TOKEN%`, `{{ token }}`,
# `<your key>`), masks, and the words of a schema or a template.
_NOT_A_VALUE = re.compile(
    r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%[A-Za-z_][A-Za-z0-9_]*%|\{\{.*\}\}|<[^<>]*>|\*+|[xX]{3,}|\.{3}|…"
    r"|(?i:null|none|nil|true|false|undefined|required|optional|string|str)"
)
_NEXT_FIELD = re.compile(r"[&;,][A-Za-z_][A-Za-z0-9_.-]*=")
_CLOSING = {")": "(", "]": "[", "}": "{"}


def _trim(value: str) -> str:
    """A bare value without the fields after it and the sentence punctuation that ends it."""
    if next_field := _NEXT_FIELD.search(value):
        value = value[: next_field.start()]
    while value and value[-1] in ".,;:)]}" and not (
        value[-1] in _CLOSING and value.count(_CLOSING[value[-1]]) >= value.count(value[-1])
    ):
        value = value[:-1]
    return value


def _value_span(match: re.Match[str]) -> Span | None:
    group = next(name for name in ("double", "single", "bare") if match.groupdict().get(name) is not None)
    value = match.group(group)
    if group == "bare":
        value = _trim(value)
        if value.startswith(("<", "{{")):  # a template: "<your token>", "{{ secret }}"
            return None
        # A word that prose goes on from is no value: "Reset your password: click the link".
        if value.isalpha() and re.match(r" [a-z]", match.string[match.start(group) + len(value) :]):
            return None
    if len(value) < 3 or _NOT_A_VALUE.fullmatch(value.strip()):
        return None
    return Span(match.start(group), match.start(group) + len(value), KIND)


def _names_itself(name: str, span: Span, text: str) -> bool:
    """The value only repeats the name, as in a log's record ("Token: Token {kind: …}")."""
    words = _WORDS.findall(name)
    return bool(words) and text[span.start : span.end].lower() == words[-1].lower()


def find_assignments(text: str) -> list[Span]:
    spans = []
    for pattern in (_ASSIGNMENT, _QUERY, _FLAG, _CHINESE_ASSIGNMENT, _TOLD):
        for match in pattern.finditer(text):
            if "name" in pattern.groupindex and not names_a_secret(match.group("name")):
                continue
            span = _value_span(match)
            if span is None or "name" in pattern.groupindex and _names_itself(match.group("name"), span, text):
                continue
            if pattern is _TOLD and not re.search(r"[^A-Za-z]", text[span.start : span.end].rstrip("!?")):
                continue  # "my PIN was blocked?"
            spans.append(span)
    return spans


_BEARER = re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]+(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)")
# "Authorization: Basic dXNlcjpwYXNz", "Authorization: token ghp_…", "Authorization: SSWS 00…", or
# the credential alone. The scheme stays.
_AUTHORIZATION = re.compile(
    r"(?<![A-Za-z0-9_-])(?i:(?:proxy-)?authorization)[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:[A-Za-z][A-Za-z0-9_-]*[ \t]+)?(?P<value>[^\s\"',;]{3,})"
)
# "Cookie: sid=…; theme=dark" (every value), "Set-Cookie: sid=…; Path=/" (the first: the rest
# are attributes).
_COOKIE = re.compile(
    r"(?<![A-Za-z0-9_-])(?P<set>(?i:set-))?(?i:cookie)[\"']?[ \t]*:[ \t]*(?P<pairs>[^\r\n\"']+)"
)
_COOKIE_PAIR = re.compile(r"[ \t]*[^=;\s]+=(?P<value>[^;\s]+)")


def find_headers(text: str) -> list[Span]:
    spans = spans_of(_BEARER, text, KIND, "value") + spans_of(_AUTHORIZATION, text, KIND, "value")
    for match in _COOKIE.finditer(text):
        offset = match.start("pairs")
        for pair in _COOKIE_PAIR.finditer(match.group("pairs")):
            spans.append(Span(offset + pair.start("value"), offset + pair.end("value"), KIND))
            if match.group("set"):
                break
    return spans


# scheme://user:password@host for any scheme (postgres, mongodb+srv, redis, amqp, smtp…). The
# password runs to the last "@" before the host, in case it holds an unencoded "@".
_URI_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/?#@\"'<>]*:(?P<value>[^\s/?#\"'<>]+)"
    r"@(?=[A-Za-z0-9\[][A-Za-z0-9.\-\[\]:]*(?:[/?#\s\"'<>,;]|$))"
)

# A PEM private key (RSA, EC, DSA, OpenSSH, PKCS#8, encrypted, PGP): the body goes, the markers
# stay. A key cut short (no END line) loses its base64 lines. Bodies written into a string with
# "\n" escapes are covered too.
_PEM = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    r"(?:(?P<body>.+?)-----END (?P=label)-----"
    r"|(?P<cut>(?:(?:\\n|\r?\n)[ \t]*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\r\n\\]*))+))",
    re.DOTALL,
)


def find_private_keys(text: str) -> list[Span]:
    spans = []
    for match in _PEM.finditer(text):
        group = "body" if match.group("body") is not None else "cut"
        start, end = match.span(group)
        body = text[start:end]
        # Leave the line breaks around the body, so the markers keep their lines.
        leading = len(body) - len(re.sub(r"^(?:\\n|\s)+", "", body))
        trailing = len(body) - len(re.sub(r"(?:\\n|\s)+$", "", body))
        if end - trailing > start + leading:
            spans.append(Span(start + leading, end - trailing, KIND))
    return spans


# --- 3. Shape ------------------------------------------------------------------------------------

# A run of base64, base64url or hex characters (percent-encoded ones too, as in a URI).
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9+/_.~%-])(?:[A-Za-z0-9+/_~.-]|%[0-9A-Fa-f]{2}){20,}={0,2}(?![A-Za-z0-9+/=_~%-])"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
# Names, not keys: a host name, a path from the root, the home or the working directory (base64
# holds "/" too), a dotted name from code ("org.slf4j.impl.Log4jLoggerAdapter").
_NAMED = re.compile(
    r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}(?::[0-9]+)?(?:/.*)?|(?:~|\.{1,2})?/.*"
    r"|[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*){2,}"
)


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _switches(classes: list[str]) -> tuple[int, float]:
    """How often neighbours differ in class, and how often they would if the classes were drawn
    at random in the same proportions."""
    counts = Counter(classes)
    expected = 1 - sum((n / len(classes)) ** 2 for n in counts.values())
    return sum(a != b for a, b in pairwise(classes)), expected * (len(classes) - 1)


def looks_random(token: str) -> bool:
    """A key or secret, not a word, identifier, path, version or number.

    A random string switches between upper case, lower case and digits about as often as its mix
    of them predicts (base62 at ~60 % of its characters, lower case and digits at ~40 %); an
    identifier switches only where a word starts ("userProfileSettings2024": 5 times in 23, where
    its mix predicts 9). Paths and versions are mostly punctuation. UUIDs, long numbers, host names,
    paths and dotted names from code are identifiers, not credentials. A vendor's prefix
    ("FLWSECK-", "pk_12345678_") would dilute the figures, so each part between dashes,
    underscores or dots is also judged alone."""
    body = re.sub(r"%[0-9A-Fa-f]{2}", "%", token).rstrip("=")
    body = body.removeprefix("0x")  # a number in hex: judged by its digits
    if len(body) < 20 or _UUID.fullmatch(body):
        return False
    if not _NAMED.fullmatch(body) and _random_run(body):
        return True
    return any(_random_run(part) for part in re.split(r"[-_.~]", body) if len(part) >= 20)


def _random_run(body: str) -> bool:
    alnum = re.sub(r"[^A-Za-z0-9]", "", body)
    if len(body) < 20 or len(body) - len(alnum) > 0.15 * len(body):
        return False
    classes = ["u" if ch.isupper() else "l" if ch.islower() else "d" for ch in alnum]
    counts = Counter(classes)
    if _HEX.fullmatch(alnum):  # a hex key or digest: long, and both digits and letters
        digits = counts["d"]
        return len(alnum) >= 32 and digits >= 0.2 * len(alnum) and len(alnum) - digits >= 0.1 * len(alnum)
    if counts["d"] == 0 or counts["d"] > 0.85 * len(alnum):
        return False
    switches, expected = _switches(classes)
    return switches >= max(0.7 * expected, 0.2 * (len(alnum) - 1)) and shannon_entropy(body) >= 3.5


# A password written alone in prose ("I pasted Cr#6*rRw%p4OCKT7 into…"): a word of letters, symbols
# and digits or both cases, that switches between them at 60 % of its characters or more.
_WORD = re.compile(r"(?<!\S)[\"'(\[]?(?P<word>[!-~]{10,64}?)[\"')\].,;:]*(?!\S)")
_PASSWORD_SYMBOLS = frozenset("!#$%^&*()+=?@~[]{}|<>")


def looks_like_a_password(word: str) -> bool:
    if not _PASSWORD_SYMBOLS & set(word):  # most words stop here
        return False
    if "://" in word or re.fullmatch(r"[^@]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", word):
        return False  # a link, an address
    classes = ["u" if ch.isupper() else "l" if ch.islower() else "d" if ch.isdigit() else "s" for ch in word]
    kinds = set(classes)
    # Letters, a symbol, and digits or both cases: amounts ("$12,345,678.90") have no letters.
    if not (kinds & {"u", "l"}) or len(kinds) < 3:
        return False
    switches, _ = _switches(classes)
    return switches >= 0.6 * (len(word) - 1)


def find_random_tokens(text: str) -> list[Span]:
    spans = []
    for match in _TOKEN.finditer(text):
        start, token = match.start(), match.group().rstrip(".")  # a sentence may end right after a key
        if start > 0 and text[start - 1] == "\\" and token[0] in "nrt":  # a "\n" escape in a string
            start, token = start + 1, token[1:]
        if looks_random(token):
            spans.append(Span(start, start + len(token), KIND))
    for match in _WORD.finditer(text):
        if looks_like_a_password(match.group("word")):
            spans.append(Span(match.start("word"), match.end("word"), KIND))
    return spans


def find_secrets(text: str) -> list[Span]:
    """Every credential span in `text`, overlapping ones included (the caller settles overlaps)."""
    return (
        find_vendor_tokens(text)
        + spans_of(_KEY_FORMATS, text, KIND)
        + find_assignments(text)
        + find_headers(text)
        + spans_of(_URI_PASSWORD, text, KIND, "value")
        + find_private_keys(text)
        + find_random_tokens(text)
    )
