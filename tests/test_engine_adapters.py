"""LoRA adapters on the real llama.cpp engine (the tiny model, random adapters written with gguf).

The reference for an adapter is the base model with the adapter merged into its weights
(W + scale × alpha / r × B·A, written as a new GGUF): the two must agree, which pins down the
file format, the orientation of A and B, and alpha's scaling, target by target (attn_q and attn_k
included: for the llama architecture those are the weights whose rows conversion permutes).
Tolerance: float32 weights and a float32 KV cache, so the merged and the adapted model differ by
summation order alone (~1e-5 on values of size 1–10); 1e-3 absolute, while the adapters change
the outputs by more than 0.1. A float16 adapter is multiplied by activations that ggml rounds to
float16 as well (relative 5e-4 each), which the merged float32 model does not do: 3e-2 there
(measured 1.2e-2), against changes of more than 1.
"""

from __future__ import annotations

import ctypes
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_model import merged_delta, write_tiny_adapter, write_tiny_gguf

from workhorse.engine import Adapter, Engine, EngineConfig, EngineWorker, EvalRequest, LlamaModel
from workhorse.errors import EngineError

ATOL = 1e-3
CONFIG = EngineConfig(n_ctx=1024, n_batch=128, n_slots=8, prefix_slots=2, kv_type="f32", flash_attention="off")
PREFIX = "the refund for my card and the password of my account:"
TEXTS = ["my card is lost", "login error on the server", "I want a refund today", "where is my money", "open"]


@pytest.fixture(scope="module")
def model(tiny_gguf):
    """A model of this module's own: the adapters loaded onto it stay with it."""
    model = LlamaModel(tiny_gguf, name="tiny")
    yield model
    model.close()


def _requests(model: LlamaModel) -> list[EvalRequest]:
    """Each text after a cached prefix (pooled and last-token states, logits) and on its own."""
    prefix = model.tokenize(PREFIX)
    requests = []
    for text in TEXTS:
        item = model.tokenize(text, add_special=False)
        requests.append(EvalRequest(prefix + item, prefix_len=len(prefix), logits_at=[-1], hidden_at=[-1], pooling="mean"))
        requests.append(EvalRequest(model.tokenize(text), logits_at=[-1, 0], hidden_at=[-1, 0]))
    return requests


def _outputs(engine) -> list[np.ndarray]:
    results = engine.evaluate(_requests(engine.model))
    out = []
    for result in results:
        out += [result.logits, result.hidden] + ([result.pooled] if result.pooled is not None else [])
    return out


def _run(model: LlamaModel, adapter: Adapter | None = None) -> list[np.ndarray]:
    """Outputs of a fresh engine, twice over: the second pass takes the prefix from its snapshot."""
    engine = Engine(model, replace(CONFIG, adapter=adapter))
    try:
        first, second = _outputs(engine), _outputs(engine)
        assert engine.prefix_stats().hits > 0
    finally:
        engine.close()
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, atol=ATOL)
    return first


def _largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _handle_address(handle) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value


def test_an_adapter_whose_b_is_zero_changes_nothing(model, tmp_path):
    path, _ = write_tiny_adapter(tmp_path / "zero.gguf", ("attn_q", "attn_k", "attn_v", "ffn_down"), zero_b=True)
    assert _largest_difference(_run(model), _run(model, Adapter.from_file(path))) < ATOL


@pytest.mark.parametrize(
    ("targets", "scale", "dtype", "atol"),
    [
        (("attn_q", "attn_k"), 1.0, np.float32, ATOL),
        (("attn_v", "attn_output"), 1.0, np.float32, ATOL),
        (("ffn_gate", "ffn_up", "ffn_down"), 1.0, np.float32, ATOL),
        (("attn_q", "attn_v"), 0.5, np.float32, ATOL),  # the adapter's scale multiplies alpha / r
        (("attn_q", "attn_v"), 1.0, np.float16, 3e-2),  # half-precision A and B
    ],
)
def test_an_adapter_equals_its_merge_into_the_weights(model, tmp_path, targets, scale, dtype, atol):
    alpha, rank = 16.0, 4
    path, weights = write_tiny_adapter(tmp_path / "adapter.gguf", targets, rank=rank, alpha=alpha, dtype=dtype)
    merged_path = write_tiny_gguf(tmp_path / "merged.gguf", add=merged_delta(weights, alpha=alpha, scale=scale, dtype=dtype))
    merged = LlamaModel(merged_path, name="merged")
    try:
        expected = _run(merged)
    finally:
        merged.close()
    adapted = _run(model, Adapter.from_file(path, scale=scale))
    assert _largest_difference(_run(model), adapted) > 100 * atol  # the adapter does change the outputs
    assert _largest_difference(expected, adapted) < atol


def test_engines_on_one_model_keep_their_own_adapters_when_interleaved(model, tmp_path):
    first, _ = write_tiny_adapter(tmp_path / "first.gguf", ("attn_q", "attn_v"), seed=1)
    second, _ = write_tiny_adapter(tmp_path / "second.gguf", ("attn_k", "ffn_up"), seed=2)
    adapters = [None, Adapter.from_file(first), Adapter.from_file(second)]
    expected = [_run(model, adapter) for adapter in adapters]
    assert min(_largest_difference(expected[i], expected[j]) for i, j in ((0, 1), (0, 2), (1, 2))) > 0.1
    engines = [Engine(model, replace(CONFIG, adapter=adapter)) for adapter in adapters]
    try:
        for _ in range(3):  # the same prefix in every engine: each snapshot is its own adapter's
            for engine, wanted in zip(engines, expected):
                assert _largest_difference(_outputs(engine), wanted) < ATOL
    finally:
        for engine in engines:
            engine.close()


def test_workers_sharing_a_model_answer_concurrently_each_with_its_adapter(model, tmp_path):
    path, _ = write_tiny_adapter(tmp_path / "adapter.gguf", ("attn_q", "attn_v", "ffn_down"))
    adapters = [None, Adapter.from_file(path)]
    expected = [_run(model, adapter) for adapter in adapters]
    workers = [EngineWorker(model, replace(CONFIG, adapter=adapter)) for adapter in adapters]
    differences: list[float] = []

    def client(k: int) -> None:
        for _ in range(4):
            differences.append(_largest_difference(_outputs(workers[k % 2]), expected[k % 2]))

    try:
        assert workers[0].model is workers[1].model  # one set of weights
        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
    finally:
        for worker in workers:
            worker.close()
    assert len(differences) == 16 and max(differences) < ATOL


def test_an_adapter_is_loaded_once_per_model_and_named_by_its_content(model, tmp_path):
    path, _ = write_tiny_adapter(tmp_path / "adapter.gguf", seed=5)
    copy = shutil.copy(path, tmp_path / "copy.gguf")  # a later task version carries the same file
    other, _ = write_tiny_adapter(tmp_path / "other.gguf", seed=6)
    assert Adapter.from_file(path) == Adapter.from_file(copy) != Adapter.from_file(other)
    assert Adapter.from_file(path) != Adapter.from_file(path, scale=0.5)
    handle = _handle_address(model.adapter_handle(Adapter.from_file(path)))
    assert _handle_address(model.adapter_handle(Adapter.from_file(copy))) == handle
    assert _handle_address(model.adapter_handle(Adapter.from_file(other))) != handle


def _wrong_architecture(path: Path) -> Path:
    return write_tiny_adapter(path, architecture="gemma3")[0]


def _wrong_shape(path: Path) -> Path:
    from tiny_model import random_lora

    from workhorse.engine import write_adapter

    weights = {name: (a[:, :10], b) for name, (a, b) in random_lora(("attn_q",)).items()}  # n_in 10, not 64
    return write_adapter(path, "llama", weights, alpha=8)


def _unknown_tensor(path: Path) -> Path:
    from tiny_model import random_lora

    from workhorse.engine import write_adapter

    a, b = random_lora(("attn_q",))["blk.0.attn_q.weight"]
    return write_adapter(path, "llama", {"blk.9.attn_q.weight": (a, b)}, alpha=8)  # the model has 2 layers


def _not_gguf(path: Path) -> Path:
    path.write_bytes(b"this is not a GGUF file\n" * 8)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_wrong_architecture, "arch mismatch"),
        (_wrong_shape, "incorrect shape"),
        (_unknown_tensor, "does not exist in base model"),
        (_not_gguf, "expected 'GGUF'"),
    ],
)
def test_an_adapter_that_does_not_fit_the_model_is_refused_with_a_fix(model, tmp_path, make, reason, capfd):
    adapter = Adapter.from_file(make(tmp_path / "bad.gguf"))
    with pytest.raises(EngineError) as error:
        Engine(model, replace(CONFIG, adapter=adapter))
    assert reason in error.value.message and str(adapter.path) in error.value.message
    assert error.value.hint
    assert "llama" in error.value.hint or "GGUF" in error.value.hint
    assert capfd.readouterr().err == ""  # llama.cpp's own lines went into the error, not to stderr
    good, _ = write_tiny_adapter(tmp_path / "good.gguf")
    Engine(model, replace(CONFIG, adapter=Adapter.from_file(good))).close()  # the model is still fine


def test_a_missing_adapter_file_is_refused_with_a_fix(tmp_path):
    with pytest.raises(EngineError) as error:
        Adapter.from_file(tmp_path / "nowhere.gguf")
    assert "not found" in error.value.message and error.value.hint
