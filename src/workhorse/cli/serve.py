"""`workhorse serve`: the HTTP server. Its flags are generated from the settings tree
(serve/settings.py), so a flag, a `WORKHORSE_*` variable and a config-file key always agree.

The settings tree (pydantic-settings) takes a quarter of a second to import, so the flags are
built only when `serve` runs: `register` adds a thin command that hands its arguments, `--help`
included, to the real one, generated on the spot.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import typer

HELP = "Serve OpenAI-compatible generation and embeddings, and the tasks, over HTTP."


def register(app: typer.Typer) -> None:
    settings = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

    @app.command("serve", help=HELP, context_settings=settings, add_help_option=False)
    def serve_entry(ctx: typer.Context) -> None:
        command = typer.main.get_command(_serve_app())
        command.main(list(ctx.args), prog_name=f"{ctx.find_root().info_name} serve", standalone_mode=True)


def _serve_app() -> typer.Typer:
    inner = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    serve.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
    inner.command(help=HELP)(serve)
    return inner


def _flag_type(annotation: Any) -> Any:
    from pydantic import SecretStr

    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return list[str] if item in (str, SecretStr) else list[item]
    return annotation


def _parameters() -> list[inspect.Parameter]:
    from workhorse.serve.settings import ServeSettings

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
    import logging

    import uvicorn

    from workhorse.serve.app import create_app
    from workhorse.serve.settings import load_settings
    from workhorse.tasks.spec import is_loopback

    config = flags.pop("config", None)
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    try:
        settings = load_settings(config, **given)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not is_loopback(settings.host) and not settings.api_keys:
        logging.getLogger("workhorse.serve").warning(
            "listening on %s without API keys: anyone who can reach this port can use it (set --api-key)", settings.host
        )
    if settings.ray:
        from workhorse.scale.ray_serve import run

        run(settings, settings.ray, max_replicas=settings.ray_max_replicas,
            cpus_per_replica=settings.ray_cpus_per_replica or settings.threads)
        return
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level="info",
    )
