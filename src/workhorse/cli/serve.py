"""`workhorse serve`: the HTTP server. Its flags are generated from the settings tree
(serve/settings.py), so a flag, a `WORKHORSE_*` variable and a config-file key always agree."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import typer
from pydantic import SecretStr

from workhorse.serve.settings import ServeSettings


def _flag_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return list[str] if item in (str, SecretStr) else list[item]
    return annotation


def _parameters() -> list[inspect.Parameter]:
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str | None,
            default=typer.Option(None, "--config", help="A YAML/JSON file of settings (also $WORKHORSE_CONFIG)."),
        )
    ]
    for name, field in ServeSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "none" if default in ([], None) else ("(secret)" if name == "api_keys" else default)
        help_text = f"{field.description} (env WORKHORSE_{name.upper()}, default: {shown})"
        flag = "--" + name.replace("_", "-")
        if typing.get_origin(field.annotation) is list:
            help_text += "; repeat the flag for several"
            flag = "--" + name.rstrip("s").replace("_", "-")  # --model a --model b
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=_flag_type(field.annotation) | None,
                default=typer.Option(None, flag, help=help_text),
            )
        )
    return params


def serve(**flags: Any) -> None:
    """Serve OpenAI-compatible generation and embeddings, and the tasks, over HTTP."""
    import logging

    import uvicorn

    from workhorse.serve.app import create_app
    from workhorse.serve.settings import load_settings

    config = flags.pop("config", None)
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    try:
        settings = load_settings(config, **given)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logging.getLogger("workhorse.serve").warning(
            "listening on %s without API keys: anyone who can reach this port can use it (set --api-key)", settings.host
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level="info",
    )


serve.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
