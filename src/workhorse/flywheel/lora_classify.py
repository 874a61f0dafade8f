"""LoRA for classification: the feature model's linear layers and the classification head trained
together, on the same prompt and pooling the engine serves with.

The run, for labelled rows:
1. A tenth of the rows (every label represented where it can be) is kept for calibration.
2. The head of `workhorse fit` is trained on the base model's features of the rest: the start point.
3. The task's GGUF is loaded dequantized into torch (transformers) with LoRA adapters on every
   linear layer of every block; adapters and head are trained with cross-entropy on the head's
   logits: the same tokens (`FeaturePrompt`), the final-norm state of the last token (and the mean
   over the item's tokens, and intermediate layers, as the task says).
4. The head's temperature is set on the calibration tenth, as for the plain head.
5. The adapter is exported to llama.cpp's GGUF LoRA format beside the head: the engine applies
   it to this task version's work.

The loop, its checkpoints (an interrupted run resumes) and its determinism are `lora_loop`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workhorse.engine import LlamaModel
from workhorse.evals.datasets import Dataset
from workhorse.flywheel.lora_loop import LoraOptions, StepProgress, export, padded, remove_checkpoint, run_key, train_steps
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model, pick_device, require_torch
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.features import FeaturePrompt
from workhorse.tasks.fit import FitResult
from workhorse.tasks.head import LinearHead, TrainReport, fit_temperature, train_head
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import ADAPTER_FILE, save_task, version_dir

__all__ = ["LoraOptions", "LoraReport", "StepProgress", "fit_lora"]

CALIBRATION_SHARE = 0.1


@dataclass(frozen=True)
class LoraReport:
    steps: int
    epochs: float
    train_rows: int
    calibration_rows: int
    tokens: int
    train_seconds: float
    tokens_per_s: float
    final_loss: float
    calibration_accuracy_head: float  # the start point: the plain head on the base model's features
    calibration_accuracy: float  # after training, in torch
    temperature: float
    resumed_at_step: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"LoRA: {self.steps} steps, {self.tokens:,} tokens in {self.train_seconds:.0f} s ({self.tokens_per_s:,.0f} tokens/s); "
                f"calibration accuracy {self.calibration_accuracy:.4f} (plain head {self.calibration_accuracy_head:.4f})")


def fit_lora(spec: TaskSpec, data: Dataset, model: LlamaModel, *, options: LoraOptions = LoraOptions(),
             progress: Callable[[int], None] | None = None, steps: StepProgress | None = None) -> tuple[FitResult, LoraReport]:
    """Train head and adapter for `spec` (a head-mode classify version of `model`, whose
    tokenizer gives the tokens) on `data`; save both with the version, which stays inactive until
    promoted. `progress` hears of the items embedded for the start point, `steps` of the training steps."""
    torch = require_torch()
    device = pick_device(options.device)
    rows = [ex for ex in data.examples if ex.label is not None]
    texts, labels = [ex.text for ex in rows], [ex.label for ex in rows]
    fit_rows, calibration_rows = _calibration_split(labels, options.seed)

    classify = spec.classify
    prompt = FeaturePrompt(model, classify.feature_prompt)
    tokens = [prompt.tokens(text) for text in texts]
    base, architecture = load_model(model.path, device=device, threads=options.threads)
    settings = LoraSettings(rank=options.rank, alpha=options.alpha, targets=options.targets)
    lora_model = add_lora(base, settings, seed=options.seed)  # B = 0: still the base model
    reader = TorchFeatures(lora_model, len(prompt.prefix), classify.features_pooling == "last+mean", tuple(classify.layers), device)
    # The start point: the plain head on the base model's features, computed here in torch (the
    # engine's differ in the last digits with its batching, and a run must repeat exactly).
    base_features = _embed(torch, reader, tokens, options.batch_size, progress)
    head, _ = train_head(base_features[fit_rows], [labels[i] for i in fit_rows], seed=options.seed)
    index = {label: i for i, label in enumerate(head.labels)}
    y = np.array([index[label] for label in labels])
    start_accuracy = (float((head.logits(base_features[calibration_rows]).argmax(axis=1) == y[calibration_rows]).mean())
                      if calibration_rows else float("nan"))  # too few rows per label to hold any out
    trainable = _TrainableHead(torch, head, device)
    key = run_key(spec.name, model.path, spec.classify.model_dump(mode="json"), ([tokens[i], labels[i]] for i in fit_rows), options)
    fit_tokens, target = [tokens[i] for i in fit_rows], torch.tensor(y[fit_rows], dtype=torch.long)

    def loss_of(batch: np.ndarray) -> Any:
        logits = trainable.logits(reader([fit_tokens[i] for i in batch]))
        return torch.nn.functional.cross_entropy(logits, target[batch].to(logits.device), reduction="sum")

    trained = train_steps(torch, lora_model, loss_of, [len(t) for t in fit_tokens], options, key, steps,
                          extra={"coef": trainable.coef, "intercept": trainable.intercept})

    temperature, accuracy = head.temperature, float("nan")  # without calibration rows: the plain head's temperature
    if calibration_rows:
        calibration_features = _embed(torch, reader, [tokens[i] for i in calibration_rows], options.batch_size)
        with torch.no_grad():
            calibration_logits = trainable.logits(torch.tensor(calibration_features, device=device)).cpu().numpy()
        temperature = fit_temperature(calibration_logits, y[calibration_rows])
        accuracy = float((calibration_logits.argmax(axis=1) == y[calibration_rows]).mean())
    final = trainable.as_head(temperature)

    directory = version_dir(spec)
    final.save(directory / HEAD_FILE)
    export(lora_model, base.config, architecture, options, directory / ADAPTER_FILE)
    saved = save_task(spec)
    remove_checkpoint(key)
    report = LoraReport(
        steps=trained.steps, epochs=options.epochs, train_rows=len(fit_rows), calibration_rows=len(calibration_rows),
        tokens=trained.tokens, train_seconds=round(trained.seconds, 1),
        tokens_per_s=trained.tokens_per_s,
        final_loss=round(trained.final_loss, 4), calibration_accuracy_head=round(start_accuracy, 4),
        calibration_accuracy=round(accuracy, 4), temperature=round(temperature, 4), resumed_at_step=trained.resumed_at,
    )
    train_report = TrainReport(len(fit_rows), len(head.labels), 0.0, accuracy, temperature)
    return FitResult(spec, saved, train_report), report


class TorchFeatures:
    """The torch twin of FeatureExtractor: one padded batch of token lists → (batch, dim) features."""

    def __init__(self, model: Any, prefix_len: int, with_mean: bool, layers: tuple[int, ...], device: str) -> None:
        self.model, self.prefix_len, self.with_mean, self.layers, self.device = model, prefix_len, with_mean, layers, device

    def __call__(self, batch: Sequence[Sequence[int]]) -> Any:
        import torch

        ids, mask, lengths = padded(batch, self.device)
        positions = torch.arange(ids.shape[1], device=self.device)
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=bool(self.layers))
        rows, last = torch.arange(len(batch), device=self.device), lengths - 1
        hidden = out.last_hidden_state
        parts = [hidden[rows, last]]
        if self.with_mean:  # the engine's mean covers the item and the prompt's tail: every token after the prefix
            own = (mask & (positions[None, :] >= self.prefix_len)).to(hidden.dtype)
            parts.append((hidden * own[..., None]).sum(dim=1) / own.sum(dim=1, keepdim=True))
        # llama.cpp's `l_out-N` is the output of block N: transformers' hidden_states[N + 1].
        parts += [out.hidden_states[layer + 1][rows, last] for layer in self.layers]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class _TrainableHead:
    """The linear head in torch: its standardisation fixed, its weights trained."""

    def __init__(self, torch: Any, head: LinearHead, device: str) -> None:
        self.labels = head.labels
        self.mean = torch.tensor(head.mean, device=device)
        self.scale = torch.tensor(head.scale, device=device)
        self.coef = torch.nn.Parameter(torch.tensor(head.coef, device=device))
        self.intercept = torch.nn.Parameter(torch.tensor(head.intercept, device=device))
        self._head = head

    def logits(self, features: Any) -> Any:
        return ((features - self.mean) / self.scale) @ self.coef.T + self.intercept

    def as_head(self, temperature: float) -> LinearHead:
        return LinearHead(self.labels, self._head.mean, self._head.scale, self.coef.detach().cpu().numpy().astype(np.float32),
                          self.intercept.detach().cpu().numpy().astype(np.float32), temperature)


def _embed(torch: Any, reader: TorchFeatures, tokens: list[list[int]], batch_size: int,
           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Features of every token list, without gradients, in batches of similar length."""
    reader.model.eval()
    order = np.argsort([len(t) for t in tokens], kind="stable")
    out: np.ndarray | None = None
    with torch.no_grad():
        for start in range(0, len(order), 2 * batch_size):
            chunk = order[start : start + 2 * batch_size]
            features = reader([tokens[i] for i in chunk]).cpu().numpy()
            if out is None:
                out = np.empty((len(tokens), features.shape[1]), dtype=np.float32)
            out[chunk] = features
            if progress:
                progress(len(chunk))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _calibration_split(labels: Sequence[str], seed: int) -> tuple[list[int], list[int]]:
    """(rows to train on, rows to calibrate on): a tenth of each label with at least 3 rows."""
    rng = np.random.default_rng(seed)
    fit_rows, calibration_rows = [], []
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for label in sorted(by_label):
        members = list(rng.permutation(by_label[label]))
        held = int(round(CALIBRATION_SHARE * len(members))) if len(members) >= 3 else 0
        calibration_rows += members[:held]
        fit_rows += members[held:]
    return sorted(int(i) for i in fit_rows), sorted(int(i) for i in calibration_rows)
