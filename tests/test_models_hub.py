"""Hub models are pinned: `hf:OWNER/REPO/FILE.gguf@COMMIT#sha256=HASH` is downloaded at that commit
and hashed before use; a reference without a pin is refused unless it says `#unpinned`.

The Hub cannot be reached from the tests, so a stand-in `huggingface_hub` package (written to a
temporary folder and put first on the import path) serves files from a local folder, laid out
as REPO/REVISION/FILE, and records how it was called. Everything above it is the real code."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from workhorse.errors import ChecksumMismatchError, ModelError, UnknownModelError
from workhorse.models import BUILTIN_MODELS, ModelSpec, resolve, status
from workhorse.models.hub import HubFile, parse_ref, require_pin

COMMIT = "0123456789abcdef0123456789abcdef01234567"
BYTES = b"GGUF" + bytes(range(256)) * 40
SHA = hashlib.sha256(BYTES).hexdigest()
FAKE_HUB = '''
import json, os
from pathlib import Path

class EntryNotFoundError(Exception):
    pass

class LocalEntryNotFoundError(EntryNotFoundError):
    pass

def _record(call):
    with open(os.environ["FAKE_HUB_CALLS"], "a") as calls:
        calls.write(json.dumps(call) + "\\n")

def hf_hub_download(repo_id, filename, revision=None, local_files_only=False):
    _record({"repo_id": repo_id, "filename": filename, "revision": revision, "local_files_only": local_files_only})
    path = Path(os.environ["FAKE_HUB_FILES"]) / repo_id / (revision or "main") / filename
    if not path.is_file():
        raise (LocalEntryNotFoundError if local_files_only else EntryNotFoundError)(str(path))
    return str(path)

def try_to_load_from_cache(repo_id, filename, revision=None):
    path = Path(os.environ["FAKE_HUB_FILES"]) / repo_id / (revision or "main") / filename
    return str(path) if path.is_file() else None
'''


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in hub: `put(repo, revision, filename, data)` publishes a file; `calls()` lists
    the downloads asked for."""
    site = tmp_path / "site" / "huggingface_hub"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(FAKE_HUB)
    monkeypatch.syspath_prepend(str(site.parent))
    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
    files, calls = tmp_path / "hub-files", tmp_path / "hub-calls.jsonl"
    monkeypatch.setenv("FAKE_HUB_FILES", str(files))
    monkeypatch.setenv("FAKE_HUB_CALLS", str(calls))
    monkeypatch.delenv("WORKHORSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    class Hub:
        @staticmethod
        def put(repo: str, revision: str, filename: str, data: bytes) -> Path:
            path = files / repo / revision / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return path

        @staticmethod
        def calls() -> list[dict]:
            return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    yield Hub
    sys.modules.pop("huggingface_hub", None)


def test_a_pinned_reference_is_downloaded_at_its_commit_and_verified(hub) -> None:
    hub.put("acme/tiny-GGUF", COMMIT, "tiny.gguf", BYTES)
    ref = f"hf:acme/tiny-GGUF/tiny.gguf@{COMMIT}#sha256={SHA}"
    resolved = resolve(ref)
    assert resolved.path.read_bytes() == BYTES and resolved.name == ref
    assert hub.calls() == [{"repo_id": "acme/tiny-GGUF", "filename": "tiny.gguf", "revision": COMMIT, "local_files_only": False}]
    assert resolve(ref, pull=False).path == resolved.path  # from the cache; the marker spares a rehash
    assert hub.calls()[-1]["local_files_only"] is True


def test_bytes_that_differ_from_the_pin_are_refused(hub) -> None:
    hub.put("acme/tiny-GGUF", COMMIT, "tiny.gguf", BYTES[:-1] + b"!")
    with pytest.raises(ChecksumMismatchError, match="sha256 mismatch") as caught:
        resolve(f"hf:acme/tiny-GGUF/tiny.gguf@{COMMIT}#sha256={SHA}")
    assert "huggingface.co" in caught.value.hint


def test_a_file_changed_after_its_verification_is_caught(hub) -> None:
    path = hub.put("acme/tiny-GGUF", COMMIT, "tiny.gguf", BYTES)
    ref = f"hf:acme/tiny-GGUF/tiny.gguf@{COMMIT}#sha256={SHA}"
    resolve(ref)
    path.write_bytes(BYTES[:-1] + b"!")  # same size, new mtime: the marker no longer vouches for it
    with pytest.raises(ChecksumMismatchError):
        resolve(ref, pull=False)


@pytest.mark.parametrize("ref", [
    "hf:acme/tiny-GGUF/tiny.gguf",
    f"hf:acme/tiny-GGUF/tiny.gguf@{COMMIT}",
    f"hf:acme/tiny-GGUF/tiny.gguf#sha256={SHA}",
    f"hf:acme/tiny-GGUF/tiny.gguf@main#sha256={SHA}",  # a branch moves
])
def test_an_unpinned_reference_is_refused_before_any_download(hub, ref: str) -> None:
    hub.put("acme/tiny-GGUF", "main", "tiny.gguf", BYTES)
    with pytest.raises(ModelError, match="not pinned") as caught:
        resolve(ref)
    assert "#unpinned" in caught.value.hint and "@COMMIT#sha256=HASH" in caught.value.hint
    assert hub.calls() == []


def test_unpinned_is_an_explicit_choice(hub) -> None:
    hub.put("acme/tiny-GGUF", "main", "tiny.gguf", b"anything at all")
    assert resolve("hf:acme/tiny-GGUF/tiny.gguf#unpinned").path.read_bytes() == b"anything at all"
    assert hub.calls()[-1]["revision"] is None


@pytest.mark.parametrize("ref", [
    "hf:acme/tiny-GGUF/tiny.gguf@",
    "hf:acme/tiny-GGUF/tiny.gguf#",
    "hf:acme/tiny-GGUF/tiny.gguf#sha256=abc",
    "hf:acme/tiny-GGUF/tiny.gguf#sha1=" + "a" * 40,
    "hf:acme/tiny.gguf",
])
def test_malformed_pins(ref: str) -> None:
    with pytest.raises(UnknownModelError, match="malformed"):
        parse_ref(ref)


def test_the_parts_of_a_reference() -> None:
    ref = parse_ref(f"hf:acme/tiny-GGUF/sub/dir/tiny.gguf@{COMMIT}#sha256={SHA.upper()}")
    assert ref.file == HubFile("acme/tiny-GGUF", "sub/dir/tiny.gguf", COMMIT) and ref.sha256 == SHA and not ref.unpinned
    require_pin(ref)


def test_every_hub_builtin_is_pinned() -> None:
    hub_models = [spec for spec in BUILTIN_MODELS.values() if isinstance(spec.source, HubFile)]
    assert hub_models
    for spec in hub_models:
        assert spec.source.revision is not None and len(spec.source.revision) == 40, spec.name
        assert spec.sha256 is not None and len(spec.sha256) == 64 and spec.size_bytes, spec.name


def test_the_builtin_hub_model_is_asked_for_at_its_commit_and_checked(hub) -> None:
    """The real qwen3-0.6b pin: bytes other than the published ones are refused."""
    spec = BUILTIN_MODELS["qwen3-0.6b"]
    assert isinstance(spec.source, HubFile)
    hub.put(spec.source.repo, spec.source.revision, spec.source.filename, BYTES)
    with pytest.raises(ChecksumMismatchError, match="size mismatch"):
        resolve("qwen3-0.6b")
    assert hub.calls()[0]["revision"] == "23749fefcc72300e3a2ad315e1317431b06b590a"


def test_a_pinned_builtin_is_verified_and_says_so(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    source = HubFile("acme/tiny-GGUF", "tiny.gguf", COMMIT)
    spec = ModelSpec("tiny-hub", "test", "test", "tiny.gguf", len(BYTES), SHA, source, offline=False)
    monkeypatch.setitem(BUILTIN_MODELS, "tiny-hub", spec)
    hub.put("acme/tiny-GGUF", COMMIT, "tiny.gguf", BYTES)
    assert not status("tiny-hub").verified
    assert resolve("tiny-hub").path.read_bytes() == BYTES
    after = status("tiny-hub")
    assert after.assembled and after.verified and after.state == "downloaded"
