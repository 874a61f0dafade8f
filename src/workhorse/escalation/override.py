"""An upstream named on the command line (`eval --upstream-url`, `tasks calibrate --base-url`) in
place of the task's.

The task's settings (timeouts, retries, breaker) carry over; its trust does not travel. The API key
a task names (`api_key_env`) and its `allow_insecure` were granted to the task's own upstream, so
for a URL on another origin (scheme, host or port) both are dropped: no key leaves unless the
command line names one itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from workhorse.errors import TaskSpecError
from workhorse.tasks.spec import UpstreamOptions

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of `url`, the default port filled in; None when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return None
    if not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


def command_line_upstream(
    configured: UpstreamOptions | None,
    *,
    base_url: str | None,
    model: str | None,
    api_key_env: str | None,
    option: str,
    fresh: dict[str, Any] | None = None,
) -> UpstreamOptions:
    """The task's upstream with what the command line changed, or a new one (`fresh`: settings for
    an upstream the task does not have). `option` names the URL's option in error messages."""
    settings = configured.model_dump() if configured is not None else dict(fresh or {})
    if base_url:
        settings["base_url"] = base_url
    if model:
        settings["model"] = model
    same_place = configured is not None and origin(configured.base_url) == origin(settings.get("base_url", ""))
    if not same_place:
        settings |= {"api_key_env": None, "allow_insecure": False}
    if api_key_env:
        settings["api_key_env"] = api_key_env
    try:
        return UpstreamOptions.model_validate(settings)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'upstream'}: {e['msg']}" for e in error.errors())
        hint = "use https (or a loopback address), and give both a URL and a model"
        raise TaskSpecError(f"{option}: {problems}", hint) from None
