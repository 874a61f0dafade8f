"""Assembly of chunked weights: exact bytes, idempotence, atomicity, corruption detection."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workhorse.errors import ChecksumMismatchError, ModelError
from workhorse.models.assemble import assemble, marker_path, verify


def _make_parts(directory: Path, sizes: tuple[int, ...] = (3000, 4096, 1234)) -> tuple[list[Path], bytes, str]:
    directory.mkdir(parents=True, exist_ok=True)
    parts, data = [], b""
    for index, size in enumerate(sizes):
        chunk = hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1)
        chunk = chunk[:size]
        part = directory / f"model.gguf.part{index:02d}"
        part.write_bytes(chunk)
        parts.append(part)
        data += chunk
    return parts, data, hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial-" in p.name or ".tmp-" in p.name)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[list[Path], bytes, str]:
    return _make_parts(tmp_path / "parts")


def test_assembles_exact_concatenation(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "cache" / "model.gguf"
    seen: list[tuple[int, int]] = []
    assert assemble(paths, target, sha, len(data), progress=lambda done, total: seen.append((done, total))) == target
    assert target.read_bytes() == data
    assert marker_path(target).read_text().split()[:2] == [sha, str(len(data))]
    assert seen[-1] == (len(data), len(data))
    assert _leftovers(target.parent) == []


def test_second_call_does_not_rewrite_or_rehash(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    assemble(paths, target, sha, len(data))
    before = target.stat()
    seen: list[tuple[int, int]] = []
    assemble(paths, target, sha, len(data), progress=lambda done, total: seen.append((done, total)))
    after = target.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert seen == []  # the marker vouched for the file: no second hash pass


def test_missing_marker_means_a_rehash_then_a_new_marker(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    assemble(paths, target, sha, len(data))
    marker_path(target).unlink()
    mtime = target.stat().st_mtime_ns
    seen: list[tuple[int, int]] = []
    assemble(paths, target, sha, len(data), progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(data), len(data))
    assert target.stat().st_mtime_ns == mtime
    assert marker_path(target).exists()


def test_wrong_hash_leaves_nothing(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as caught:
        assemble(paths, target, wrong, len(data))
    assert wrong in caught.value.message and sha in caught.value.message
    assert caught.value.hint
    assert not target.exists() and not marker_path(target).exists()
    assert _leftovers(tmp_path) == []


def test_wrong_total_size_fails_before_writing(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    with pytest.raises(ChecksumMismatchError, match="size"):
        assemble(paths, target, sha, len(data) + 1)
    assert not target.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(tmp_path: Path, interruption: type[BaseException]) -> None:
    # Parts bigger than one 4 MiB block, so the interruption lands mid-file.
    paths, data, sha = _make_parts(tmp_path / "parts", sizes=(5 * 1024 * 1024, 1000))
    target = tmp_path / "model.gguf"

    def progress(done: int, total: int) -> None:
        if done > 4 * 1024 * 1024:
            raise interruption("interrupted")

    with pytest.raises(interruption):
        assemble(paths, target, sha, len(data), progress=progress)
    assert not target.exists() and not marker_path(target).exists()
    assert _leftovers(tmp_path) == []
    # and a retry then succeeds from scratch
    assemble(paths, target, sha, len(data))
    assert target.read_bytes() == data


def test_part_that_is_a_directory_is_refused(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    paths[1].unlink()
    paths[1].mkdir()
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelError, match="missing"):
        assemble(paths, target, sha, len(data))
    assert not target.exists() and _leftovers(tmp_path) == []


def test_corrupted_target_is_detected(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    assemble(paths, target, sha, len(data))
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(bytes(raw))
    marker_path(target).unlink()
    with pytest.raises(ChecksumMismatchError) as caught:
        assemble(paths, target, sha, len(data))
    assert sha in caught.value.message
    assert not marker_path(target).exists()  # a bad file never gets a marker


def test_corruption_is_detected_even_with_a_marker(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    # Rewriting the file moves its mtime, so the old marker no longer vouches for it.
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    assemble(paths, target, sha, len(data))
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0x01
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumMismatchError):
        verify(target, sha, len(data))


def test_truncated_target_is_detected(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    target.write_bytes(data[:-10])
    with pytest.raises(ChecksumMismatchError, match="size"):
        assemble(paths, target, sha, len(data))


def test_stale_partial_of_a_dead_process_is_removed(tmp_path: Path, parts: tuple[list[Path], bytes, str]) -> None:
    paths, data, sha = parts
    target = tmp_path / "model.gguf"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = tmp_path / f".model.gguf.partial-{child.pid}"
    stale.write_bytes(b"half a model")
    assemble(paths, target, sha, len(data))
    assert not stale.exists()
    assert target.read_bytes() == data


def test_verify_keeps_marker_where_told(tmp_path: Path) -> None:
    # Single-file packages are verified in place, with the marker in our cache, not next to the file.
    source = tmp_path / "site" / "model.gguf"
    source.parent.mkdir()
    source.write_bytes(b"gguf" * 100)
    marker = tmp_path / "cache" / "model.gguf.sha256"
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert verify(source, sha, 400, marker=marker) == source
    assert marker.exists() and not marker_path(source).exists()
