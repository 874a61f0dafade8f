"""Models fetched from the Hugging Face Hub (`hf:OWNER/REPO/FILE.gguf`).

huggingface_hub is an optional extra and is imported lazily: the offline built-ins must work
on a machine that has never seen it. Downloads land in the ordinary Hugging Face cache, so
HF_HOME / HF_HUB_CACHE are honoured and files are shared with other tools.

A Hub repository is mutable: the file behind a name can be replaced at any time. So a model is
pinned, `hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH`: downloaded at that commit and hashed
before it is used (by the registry). `#unpinned` in place of the hash is the explicit way to take
whatever the repository holds, unverified; a reference with neither is refused.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from workhorse.errors import ModelError, ModelPackageMissingError, OfflineError, UnknownModelError

PREFIX = "hf:"
HUB_INSTALL = "pip install 'workhorse[hub]'"
UNPINNED = "unpinned"
EXAMPLE_REF = (
    "hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf@23749fefcc72300e3a2ad315e1317431b06b590a"
    "#sha256=9465e63a22add5354d9bb4b99e90117043c7124007664907259bd16d043bb031"
)
_COMMIT = re.compile(r"[0-9a-f]{40}")  # a branch or a tag can move; a commit cannot
_SHA256 = re.compile(r"[0-9a-f]{64}")

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
    revision: str | None = None  # a commit hash when pinned; None: the default branch

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HubRef:
    """An `hf:` reference as written: the file, and what its bytes are checked against."""

    file: HubFile
    sha256: str | None  # None only when `unpinned`
    unpinned: bool = False  # the user asked, in so many words, for an unverified file


def _malformed(ref: str, why: str) -> UnknownModelError:
    return UnknownModelError(
        f"malformed Hugging Face reference {ref!r}: {why}",
        f"write it as hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH, e.g. {EXAMPLE_REF}",
    )


def parse_ref(ref: str) -> HubRef:
    """`hf:OWNER/REPO/FILE.gguf[@REVISION][#sha256=HASH | #unpinned]` → HubRef.

    Anything malformed is an UnknownModelError; a well-formed reference without a pin is refused
    later, by `require_pin`, so that the message can say how to pin it."""
    if not ref.startswith(PREFIX):
        raise _malformed(ref, f"it does not start with {PREFIX}")
    body, _, fragment = ref.removeprefix(PREFIX).partition("#")
    path, _, revision = body.partition("@")
    pieces = path.split("/", 2)
    if len(pieces) != 3 or not all(pieces) or not pieces[2].endswith(".gguf"):
        raise _malformed(ref, "it needs an owner, a repository and a .gguf file")
    if "@" in body and not revision:
        raise _malformed(ref, "nothing after @ (a commit hash goes there)")
    sha256 = None
    if fragment.startswith("sha256="):
        sha256 = fragment.removeprefix("sha256=").lower()
        if not _SHA256.fullmatch(sha256):
            raise _malformed(ref, "the sha256 must be 64 hexadecimal digits")
    elif fragment not in ("", UNPINNED) or (not fragment and "#" in ref):
        raise _malformed(ref, f"after # comes sha256=HASH or {UNPINNED}")
    hub_file = HubFile(repo=f"{pieces[0]}/{pieces[1]}", filename=pieces[2], revision=revision or None)
    return HubRef(hub_file, sha256, unpinned=fragment == UNPINNED)


def require_pin(ref: HubRef) -> None:
    """Refuse a reference that is neither pinned (commit and sha256) nor explicitly `#unpinned`."""
    if ref.unpinned:
        return
    revision = ref.file.revision
    if revision is not None and _COMMIT.fullmatch(revision) and ref.sha256 is not None:
        return
    missing = []
    if revision is None or not _COMMIT.fullmatch(revision):
        missing.append("a commit hash (@COMMIT; a branch or tag can move)")
    if ref.sha256 is None:
        missing.append("the file's SHA-256 (#sha256=HASH)")
    raise ModelError(
        f"{ref.file.ref} is not pinned: it lacks {' and '.join(missing)}, so the bytes it names can change",
        f"pin it as hf:{ref.file.repo}/{ref.file.filename}@COMMIT#sha256=HASH (both are on the file's page on "
        f"huggingface.co), or append #{UNPINNED} to take whatever the repository holds now, unverified",
    )


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

    found = try_to_load_from_cache(repo_id=hub_file.repo, filename=hub_file.filename, revision=hub_file.revision)
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
        return Path(hf_hub_download(repo_id=hub_file.repo, filename=hub_file.filename, revision=hub_file.revision,
                                    local_files_only=local))
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
