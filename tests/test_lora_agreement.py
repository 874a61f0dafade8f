"""llama.cpp with an exported adapter and torch with the adapter it was trained as agree: the
same top label on ≥ 99 % of 200 items, logits within a stated tolerance. On the tiny llama model
(q/k rows permuted on export) in the default run, on gemma3-270m behind the `slow` marker."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("peft")

from workhorse.engine import Engine, EngineConfig, LlamaModel  # noqa: E402
from workhorse.engine.adapter import Adapter  # noqa: E402
from workhorse.evals.datasets import Dataset, load  # noqa: E402
from workhorse.flywheel.adapter_gguf import read_adapter  # noqa: E402
from workhorse.flywheel.lora_classify import LoraOptions, TorchFeatures, fit_lora  # noqa: E402
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model, require_torch  # noqa: E402
from workhorse.tasks.features import FeatureExtractor  # noqa: E402
from workhorse.tasks.fit import task_for_data  # noqa: E402
from workhorse.tasks.head import LinearHead  # noqa: E402
from workhorse.tasks.store import ADAPTER_FILE  # noqa: E402


def _both_sides(model: LlamaModel, directory, spec, texts: list[str], options: LoraOptions) -> tuple[np.ndarray, np.ndarray]:
    """(llama.cpp's head logits with the adapter, torch's) for `texts`."""
    torch = require_torch()
    head = LinearHead.load(directory / "head.npz")
    engine = Engine(model, EngineConfig(n_ctx=2048, n_threads=2, adapter=Adapter.from_file(directory / ADAPTER_FILE)))
    try:
        extractor = FeatureExtractor(engine, spec.classify.feature_prompt, spec.classify.layers, spec.classify.features_pooling)
        served = head.logits(extractor.extract(texts))
    finally:
        engine.close()
    base, architecture = load_model(model.path)
    twin = add_lora(base, LoraSettings(rank=options.rank, alpha=options.alpha), seed=0)
    config = base.config
    state = read_adapter(directory / ADAPTER_FILE, architecture=architecture, n_head=config.num_attention_heads,
                         n_head_kv=config.num_key_value_heads)
    parameters = {name.split("layers.", 1)[1].replace(".default", ""): p for name, p in twin.named_parameters() if "lora_" in name}
    assert len(parameters) == len(state)
    with torch.no_grad():
        for key, value in state.items():
            parameters[key.removeprefix("layers.")].copy_(torch.tensor(value))
        reader = TorchFeatures(twin, len(extractor.prompt.prefix), spec.classify.features_pooling == "last+mean",
                               tuple(spec.classify.layers), "cpu")
        trained = np.concatenate([head.logits(reader([extractor.prompt.tokens(t) for t in texts[i : i + 16]]).numpy())
                                  for i in range(0, len(texts), 16)])
    return served, trained


def _agreement(served: np.ndarray, trained: np.ndarray) -> tuple[float, float]:
    same_top = float((served.argmax(axis=1) == trained.argmax(axis=1)).mean())
    # The gap relative to each item's logit spread: what could move a decision.
    spread = trained.max(axis=1) - np.median(trained, axis=1)
    relative = float(np.quantile(np.abs(served - trained).max(axis=1) / spread, 0.95))
    return same_top, relative


def test_llama_cpp_with_the_adapter_agrees_with_torch_on_the_tiny_model(tiny_model) -> None:
    from test_lora_classify import TOPICS, _data

    data = _data(per_label=30)
    spec = task_for_data("agree", data, model=str(tiny_model.path), prompt=None, layers=None)
    options = LoraOptions(epochs=2, batch_size=8, learning_rate=1e-2, threads=1)
    fitted, _ = fit_lora(spec, data, tiny_model, options=options)
    texts = [ex.text for ex in _data(per_label=70, seed=1).examples[:200]]
    served, trained = _both_sides(tiny_model, fitted.directory, fitted.spec, texts, options)
    same_top, relative = _agreement(served, trained)
    assert len(TOPICS) == served.shape[1]
    assert same_top >= 0.99
    assert relative <= 0.01  # float32 weights on both sides: only summation order differs


@pytest.mark.slow
def test_llama_cpp_with_the_adapter_agrees_with_torch_on_gemma(real_model_path) -> None:
    """gemma3-270m Q4_K_M: llama.cpp runs the quantised weights, torch their dequantised copy."""
    model = LlamaModel(real_model_path("gemma3-270m"))
    train = load("banking77:train")
    rows = Dataset(train.name, train.split, train.examples[:480], train.labels, train.kind, train.language)
    spec = task_for_data("agree", rows, model=str(model.path), prompt=None, layers=None)
    options = LoraOptions(epochs=1, learning_rate=1e-3)
    fitted, _ = fit_lora(spec, rows, model, options=options)
    texts = [ex.text for ex in load("banking77:test").examples[:200]]
    served, trained = _both_sides(model, fitted.directory, fitted.spec, texts, options)
    same_top, relative = _agreement(served, trained)
    print(f"same top label {same_top:.3f}, 95th percentile of the largest logit gap / logit spread {relative:.3f}")
    assert same_top >= 0.99
    assert relative <= 0.25
