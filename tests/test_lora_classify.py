"""LoRA for classification on the tiny llama model: the training code path end to end (torch from
the GGUF, adapters and head trained together, export to llama.cpp's format), its determinism and
its resumption after an interruption."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("peft")

from workhorse.evals.datasets import Dataset, Example  # noqa: E402
from workhorse.flywheel.adapter_gguf import export_adapter, lora_state, read_adapter  # noqa: E402
from workhorse.flywheel.lora_classify import LoraOptions, fit_lora  # noqa: E402
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model  # noqa: E402
from workhorse.tasks.fit import task_for_data  # noqa: E402
from workhorse.tasks.head import LinearHead  # noqa: E402
from workhorse.tasks.store import ADAPTER_FILE  # noqa: E402

TOPICS = {"refund": "refund money back card", "login": "password login account user", "ship": "boat ship river sea"}
FAST = LoraOptions(epochs=2, batch_size=8, learning_rate=1e-3, checkpoint_every=4, threads=1)


def _data(per_label: int = 20, seed: int = 0) -> Dataset:
    rnd = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        vocabulary = words.split() + ["the", "a", "of", "time", "water", "city"]
        rows += [Example(text=" ".join(rnd.choice(vocabulary) for _ in range(5)), label=label) for _ in range(per_label)]
    return Dataset("topics", "train", rows, sorted(TOPICS), "classify", "en")


def _train(model, name: str = "topics", options: LoraOptions = FAST, steps=None):
    data = _data()
    spec = task_for_data(name, data, model=str(model.path), prompt=None, layers=None)
    return fit_lora(spec, data, model, options=options, steps=steps)


class _Steps:
    def __init__(self, stop_after: int | None = None) -> None:
        self.total, self.steps, self.losses, self.stop_after = 0, 0, [], stop_after

    def start(self, total_tokens: int, done_tokens: int = 0) -> None:
        self.total = total_tokens

    def step(self, tokens: int, loss: float) -> None:
        self.steps += 1
        self.losses.append(loss)
        if self.stop_after is not None and self.steps == self.stop_after:
            raise KeyboardInterrupt


def _adapter(result) -> dict[str, np.ndarray]:
    return read_adapter(result.directory / ADAPTER_FILE, architecture="llama", n_head=4, n_head_kv=2)


def test_lora_trains_head_and_adapter_and_saves_both(tiny_model) -> None:
    steps = _Steps()
    fitted, report = _train(tiny_model, steps=steps)
    assert (fitted.directory / ADAPTER_FILE).is_file()
    head = LinearHead.load(fitted.directory / "head.npz")
    assert head.labels == sorted(TOPICS)
    assert report.steps == steps.steps == int(np.ceil(2 * report.train_rows / 8))
    assert report.calibration_rows == 6  # a tenth of each label's 20 rows
    assert all(np.isfinite(steps.losses))
    adapter = _adapter(fitted)
    # Every linear layer of both blocks, A and B; B moved away from its zero start.
    assert len(adapter) == 2 * 7 * 2
    assert all(np.abs(value).max() > 0 for key, value in adapter.items() if "lora_B" in key)
    assert fitted.spec.classify.mode == "head"


def test_a_fixed_seed_gives_the_same_adapter(tiny_model) -> None:
    first, _ = _train(tiny_model, "one")
    second, _ = _train(tiny_model, "two")
    a, b = _adapter(first), _adapter(second)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[key], b[key]) for key in a)
    other, _ = _train(tiny_model, "three", options=LoraOptions(**{**FAST.__dict__, "seed": 1}))
    assert any(not np.array_equal(a[key], _adapter(other)[key]) for key in a)


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_model) -> None:
    whole, _ = _train(tiny_model, "whole")
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_model, "cut", steps=_Steps(stop_after=6))  # the checkpoint of step 4 stays
    resumed, report = _train(tiny_model, "cut")
    assert report.resumed_at_step == 4
    a, b = _adapter(whole), _adapter(resumed)
    assert all(np.allclose(a[key], b[key], atol=1e-6) for key in a)
    again, report = _train(tiny_model, "cut")  # a completed run leaves no checkpoint behind
    assert report.resumed_at_step == 0


def test_exported_adapter_reads_back_with_llama_rows_in_order(tiny_gguf, tmp_path) -> None:
    model, architecture = load_model(tiny_gguf)
    model = add_lora(model, LoraSettings(rank=4, alpha=8), seed=0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()
    state = lora_state(model)
    path = export_adapter(state, architecture=architecture, n_layers=2, n_head=4, n_head_kv=2, alpha=8, path=tmp_path / "a.gguf")
    back = read_adapter(path, architecture=architecture, n_head=4, n_head_kv=2)
    assert state.keys() == back.keys()
    assert all(np.array_equal(back[key], value) for key, value in state.items())


def test_targets_choose_the_adapted_layers(tiny_model) -> None:
    from workhorse.errors import TaskError
    from workhorse.flywheel.torch_model import ATTENTION, lora_targets

    assert lora_targets("attention") == ATTENTION
    assert lora_targets("q_proj, v_proj") == ("q_proj", "v_proj")
    with pytest.raises(TaskError, match="unknown LoRA target"):
        lora_targets("q_proj,lm_head")
    fitted, _ = _train(tiny_model, "qv", options=LoraOptions(**{**FAST.__dict__, "targets": ("q_proj", "v_proj")}))
    assert sorted({key.split(".")[3] for key in _adapter(fitted)}) == ["q_proj", "v_proj"]


def test_a_step_cut_into_several_passes_trains_the_same_adapter(tiny_model) -> None:
    # Rows one at a time through the model, their gradients summed: the same step as one pass.
    whole, _ = _train(tiny_model, "one-pass")
    cut, _ = _train(tiny_model, "row-by-row", options=LoraOptions(**{**FAST.__dict__, "max_pass_tokens": 1}))
    a, b = _adapter(whole), _adapter(cut)
    assert all(np.allclose(a[key], b[key], atol=1e-5) for key in a)
