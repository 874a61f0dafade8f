"""`workhorse eval EMBED_TASK DATA --index INDEX` end to end on the tiny model, as a real process.

The tiny model's vectors are random, but a text's vector is its own: a query whose text is in the
index finds its copies first (cosine 1). So the figures are known exactly when every index text
comes in three copies and each query copies one of them, with its label or with a label the
index lacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TEXTS = {"refund": "refund my money now", "login": "cannot login today", "card": "my card is lost",
         "transfer": "send money to a friend"}


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def files(tmp_path: Path, tiny_gguf: Path) -> dict[str, str]:
    task = tmp_path / "toy-features.yaml"
    task.write_text(f"name: toy-features\nkind: embed\nmodel: {tiny_gguf}\nembed: {{pooling: mean, normalize: true}}\n")
    index = [{"text": text, "label": label} for label, text in TEXTS.items() for _ in range(3)]
    queries = [{"text": TEXTS["refund"], "label": "refund"}, {"text": TEXTS["card"], "label": "card"},
               {"text": TEXTS["login"], "label": "unknown"}, {"text": TEXTS["transfer"], "label": "unknown"}]
    return {"task": str(task), "index": _write(tmp_path / "index.jsonl", index),
            "queries": _write(tmp_path / "queries.jsonl", queries)}


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workhorse.cli", "eval", *args], capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "COLUMNS": "160"})


def test_figures_as_json(files):
    result = _eval(files["task"], files["queries"], "--index", files["index"], "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    # Two queries find copies with their own label; two find copies of another label.
    assert report["knn_accuracy"] == {"1": 0.5, "5": 0.5}  # k=5: three of the five nearest are the copies
    # Only the two queries whose label the index has are scored; their three copies fill the top 3.
    assert report["retrieval"] == {"k": 10, "queries": 2, "queries_without_relevant": 2, "mean_relevant": 3.0,
                                   "recall_at_k": 1.0, "hit_at_k": 1.0, "mrr_at_k": 1.0}
    assert report["n"] == 4 and report["index_rows"] == 12 and report["dimensions"] == 64
    assert report["data"]["index"]["spec"] == files["index"] and report["items_per_s"] > 0
    assert report["task"]["kind"] == "embed" and report["task"]["pooling"] == "mean"
    assert "index" in result.stderr  # progress goes to stderr


def test_table_and_errors(files):
    result = _eval(files["task"], files["queries"], "--index", files["index"], "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nearest-neighbour accuracy (k=1)" in result.stdout and "50.00 %" in result.stdout
    assert "recall@10" in result.stdout and "100.00 %" in result.stdout
    no_index = _eval(files["task"], files["queries"])  # a file has no train split to search by default
    assert no_index.returncode == 2 and "--index" in no_index.stderr
    itself = _eval(files["task"], files["index"], "--index", files["index"])
    assert itself.returncode == 2 and "find itself" in itself.stderr
