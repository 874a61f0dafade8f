"""The server's settings: one tree, read from `WORKHORSE_*` environment variables, an optional
YAML/JSON config file and `workhorse serve` flags (generated from these same fields, see
cli/serve.py). Precedence: flags, then environment, then the config file, then the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from workhorse.tasks.spec import is_loopback

CONFIG_ENV = "WORKHORSE_CONFIG"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _default_models() -> list[str]:
    from workhorse.models import default_served_models

    return default_served_models()


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKHORSE_", extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    models: list[str] = Field(
        default_factory=_default_models,
        description="Models to load: built-in names, .gguf paths or hf: references (default: gemma3-270m, "
        "qwen2.5-coder-0.5b, and the English encoder minilm-l6 when its package is installed).",
    )
    embedding_model: str | None = Field(
        None, description="The model of a /v1/embeddings request that names none (unset: minilm-l6 when loaded, "
        "else the first model loaded).",
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="Tasks to serve (names or files); empty: every stored and example task whose model is loaded.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Bearer keys; when set, every /v1 request needs one of them."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (off when empty).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names requests may be addressed to (empty: the loopback names while bound to loopback "
        "without API keys, which stops DNS rebinding; otherwise any).",
    )
    threads: int = Field(2, ge=1, description="llama.cpp threads per model.")
    encoder_threads: int = Field(
        1, ge=1,
        description="llama.cpp threads for an encoder model (minilm-l6): its decodes take a few milliseconds, too short "
        "to share among threads without the waiting costing more than it saves, and the spare core serves HTTP.",
    )
    n_ctx: int = Field(4096, ge=256, description="KV cache cells per model.")
    n_slots: int = Field(32, ge=2, description="Concurrent sequences per model.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_item_chars: int = Field(20_000, ge=1, description="Longer task items or prompts get 413.")
    max_batch_items: int = Field(256, ge=1, description="Most items in one /v1/tasks request.")
    max_tokens_limit: int = Field(1024, ge=1, description="Largest max_tokens a completion may ask for.")
    queue_limit: int = Field(256, ge=1, description="Requests in flight per model before new ones get 429.")
    batch_window_ms: float = Field(2.0, ge=0, description="How long a task batch waits for more items.")
    default_deadline_ms: float = Field(30_000, gt=0, description="Deadline when a request sends no X-Deadline-Ms.")
    task_reload_s: float = Field(
        2.0, ge=0,
        description="How often the task store is checked for a newly promoted task version, which then replaces the "
        "served one without a restart (requests in flight finish on the old version); 0 turns this off.",
    )
    embedding_cache_mb: float = Field(
        256, ge=0,
        description="Memory for cached embedding vectors (/v1/embeddings and embed tasks), in MiB: a repeated text is "
        "answered without evaluating it, the least recently used vectors are dropped first; 0 turns the cache off.",
    )
    ray: str | None = Field(
        None, description="Serve as replicas on Ray Serve: a cluster's address, or `local` for a Ray on this machine "
        "(needs the ray extra; docs/scale.md).",
    )
    ray_max_replicas: int = Field(1, ge=1, description="With ray: replicas to scale up to on ongoing requests.")
    ray_cpus_per_replica: float | None = Field(
        None, gt=0, description="With ray: CPUs per replica, also its llama.cpp threads (unset: `threads`).",
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="How long shutdown waits for requests in flight.")
    console: bool = Field(
        True, description="Serve the web console at /ui: the call log, the review queue, task versions and log templates.",
    )
    console_secret: SecretStr | None = Field(
        None, description="Signs the console's session cookies (unset: a new secret at each start, which signs everyone "
        "out). Set the same one on servers that share an address behind a load balancer; serve --ray sets one for its "
        "replicas.",
    )
    log_calls: bool = Field(True, description="Record every task call in the call log (answers wait for the commit).")
    call_log: str | None = Field(None, description="The call log: a SQLite file or a postgresql:// URL (default: $WORKHORSE_CALL_LOG, else calls.db in $WORKHORSE_HOME).")
    retention_days: float | None = Field(None, gt=0, description="Delete logged calls older than this.")
    retention_rows: int | None = Field(None, ge=1, description="Keep at most this many logged calls (the newest).")

    @field_validator("models")
    @classmethod
    def _some_model(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("load at least one model")
        return value

    def api_key_values(self) -> list[bytes]:
        return [key.get_secret_value().encode() for key in self.api_keys]

    def host_names(self) -> frozenset[str] | None:
        """The Host names to accept, or None for any. A web page the user visits can point a name
        of its own at 127.0.0.1 (DNS rebinding) and read a keyless loopback server's answers and
        call log; checking the Host header stops it."""
        if self.allowed_hosts:
            return frozenset(name.lower() for name in self.allowed_hosts)
        if not self.api_keys and is_loopback(self.host):
            return LOOPBACK_NAMES | {self.host.lower()}
        return None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServeSettings:
    """Settings from the config file (argument, else $WORKHORSE_CONFIG), environment and overrides."""
    import os

    import yaml

    path = config_file or os.environ.get(CONFIG_ENV)
    from_file: dict[str, Any] = {}
    if path:
        try:
            from_file = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ValueError(f"cannot read the config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML/JSON: {error}") from None
        if not isinstance(from_file, dict):
            raise ValueError(f"{path} must hold a mapping of setting names to values")

    class _WithFile(ServeSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            # Explicit overrides (flags) over the environment over the file.
            return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=from_file))

    return _WithFile(**{k: v for k, v in overrides.items() if v is not None})
