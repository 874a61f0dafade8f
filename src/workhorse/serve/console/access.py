"""Who may use the console: a signed session cookie, and a CSRF token for every change.

With API keys configured, the console asks for one once and keeps a session cookie (HttpOnly,
SameSite=Strict, signed with the `console_secret` setting, else with a secret made when the server
starts: a restart then signs everyone out).
Without keys the console answers only loopback clients (routes.py) and hands out a session on the
first page. Either way every state-changing request carries
the session's CSRF token, so a page on another site cannot submit corrections or promotions
through the user's browser; the Host check of the app stops DNS-rebinding reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "workhorse_console"
SESSION_S = 12 * 3600
MAX_NAME = 80


@dataclass(frozen=True)
class Session:
    id: str
    who: str  # recorded with each correction
    expires: float
    new: bool = False  # issued by this request: its cookie must be set on the response


class ConsoleAccess:
    def __init__(self, keys: list[bytes], secret: bytes | None = None) -> None:
        self.keys = keys
        self._secret = secret or secrets.token_bytes(32)

    @property
    def needs_key(self) -> bool:
        return bool(self.keys)

    def key_matches(self, given: str) -> bool:
        token = given.strip().encode()
        return bool(token) and any([hmac.compare_digest(token, key) for key in self.keys])  # no early exit

    def issue(self, who: str) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(secrets.token_urlsafe(16), clean_name(who), time.time() + SESSION_S, new=True)
        payload = base64.urlsafe_b64encode(json.dumps({"id": session.id, "who": session.who, "exp": session.expires}).encode())
        return session, f"{payload.decode()}.{self._sign(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is ours, intact and not expired."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(payload))
            session = Session(str(values["id"]), clean_name(str(values["who"])), float(values["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, b"csrf:" + session.id.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf_token(session))

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()


def clean_name(name: str) -> str:
    """A reviewer's name as logged: printable, bounded, `console` when none is given."""
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME]
    return name or "console"
