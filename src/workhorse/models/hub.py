"""Models fetched from the Hugging Face Hub (`hf:OWNER/REPO/FILE.gguf`).

huggingface_hub is an optional extra and is imported lazily: the offline built-ins must work
on a machine that has never seen it. Downloads land in the ordinary Hugging Face cache, so
HF_HOME / HF_HUB_CACHE are honoured and files are shared with other tools.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from workhorse.errors import ModelError, ModelPackageMissingError, OfflineError, UnknownModelError

PREFIX = "hf:"
HUB_INSTALL = "pip install 'workhorse[hub]'"

# Matched by class name so that neither requests nor httpx has to be imported to recognise them;
# huggingface_hub raises one or the other depending on its version.
_OFFLINE_ERROR_NAMES = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "TimeoutException",
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "NameResolutionError",
    "MaxRetryError",
}
_NOT_FOUND_NAMES = {
    "RepositoryNotFoundError",
    "EntryNotFoundError",
    "RevisionNotFoundError",
    "RemoteEntryNotFoundError",
}


@dataclass(frozen=True)
class HubFile:
    """One file in a Hugging Face model repository."""

    repo: str  # "OWNER/REPO"
    filename: str  # may contain "/" for files in subfolders

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.repo}/{self.filename}"


def parse_ref(ref: str) -> HubFile:
    """`hf:OWNER/REPO/FILE.gguf` → HubFile; anything else is an UnknownModelError."""
    pieces = ref.removeprefix(PREFIX).split("/", 2)
    well_formed = ref.startswith(PREFIX) and len(pieces) == 3 and all(pieces) and pieces[2].endswith(".gguf")
    if not well_formed:
        raise UnknownModelError(
            f"malformed Hugging Face reference: {ref!r}",
            "write it as hf:OWNER/REPO/FILE.gguf, e.g. hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf",
        )
    return HubFile(repo=f"{pieces[0]}/{pieces[1]}", filename=pieces[2])


def is_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(var, "").strip().lower() in truthy for var in ("HF_HUB_OFFLINE", "WORKHORSE_OFFLINE"))


def hub_installed() -> bool:
    return importlib.util.find_spec("huggingface_hub") is not None


def cached_path(hub_file: HubFile) -> Path | None:
    """The file in the local Hugging Face cache, if it is there; never touches the network."""
    if not hub_installed():
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=hub_file.repo, filename=hub_file.filename)
    return Path(found) if isinstance(found, str) else None


def _class_names(error: BaseException) -> set[str]:
    names: set[str] = set()
    seen: BaseException | None = error
    while seen is not None and len(names) < 64:
        names.update(cls.__name__ for cls in type(seen).__mro__)
        seen = seen.__cause__ or seen.__context__
    return names


def download(hub_file: HubFile, *, offline_hint: str, local_only: bool = False) -> Path:
    """Fetch `hub_file` (or find it in the cache when offline / `local_only`).

    `offline_hint` is what an OfflineError tells the user to use instead; the registry knows
    which built-ins work without a network, this module does not.
    """
    offline = is_offline()
    if offline and not hub_installed():
        raise OfflineError(f"{hub_file.ref} needs the network, and workhorse is offline", offline_hint)
    if not hub_installed():
        raise ModelPackageMissingError(
            f"{hub_file.ref} is downloaded with huggingface_hub, which is not installed",
            HUB_INSTALL,
        )
    from huggingface_hub import hf_hub_download

    try:
        local = offline or local_only
        return Path(hf_hub_download(repo_id=hub_file.repo, filename=hub_file.filename, local_files_only=local))
    except Exception as error:
        names = _class_names(error)
        if "LocalEntryNotFoundError" in names and local_only and not offline:
            raise ModelError(
                f"{hub_file.ref} is not downloaded yet",
                f"run `workhorse models pull {hub_file.ref}`",
            ) from error
        if offline or names & _OFFLINE_ERROR_NAMES or isinstance(error, (ConnectionError, TimeoutError)):
            raise OfflineError(
                f"cannot download {hub_file.ref}: {'offline mode is on' if offline else 'no connection to the Hub'}",
                offline_hint,
            ) from error
        if names & _NOT_FOUND_NAMES:
            raise UnknownModelError(
                f"{hub_file.ref} was not found on the Hugging Face Hub",
                "check OWNER/REPO and the file name on huggingface.co (gated repos need `hf auth login`)",
            ) from error
        raise ModelError(f"downloading {hub_file.ref} failed: {error}", f"retry; or {offline_hint}") from error
