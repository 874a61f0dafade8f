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

Fixed seed, fixed thread count: the same adapter. A checkpoint every `checkpoint_every` steps
(under `$WORKHORSE_HOME/checkpoints/`, keyed by the model, the data and the options) lets an
interrupted run resume where it stopped; it is removed when the run completes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workhorse.engine import LlamaModel
from workhorse.evals.datasets import Dataset
from workhorse.flywheel.adapter_gguf import ADAPTER_FILE, export_adapter, lora_state
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model, pick_device, require_torch
from workhorse.paths import checkpoints_dir
from workhorse.tasks.classify import HEAD_FILE
from workhorse.tasks.features import FeaturePrompt
from workhorse.tasks.fit import FitResult
from workhorse.tasks.head import LinearHead, TrainReport, fit_temperature, train_head
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import save_task, version_dir

CALIBRATION_SHARE = 0.1
PAD_TOKEN = 0  # any id: padded positions are masked out and come after every real token


@dataclass(frozen=True)
class LoraOptions:
    epochs: float = 2.0
    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 3e-4  # the adapters'
    head_learning_rate: float = 1e-3
    batch_size: int = 16
    warmup_share: float = 0.06
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    checkpoint_every: int = 100  # steps


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
    calibration_accuracy_head: float  # the start point: the plain head on the engine's features
    calibration_accuracy: float  # after training, in torch
    temperature: float
    resumed_at_step: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepProgress(Protocol):
    """What a LoRA run says as it goes: the tokens of all its steps up front, then each step's."""

    def start(self, total_tokens: int) -> None: ...

    def step(self, tokens: int, loss: float) -> None: ...


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
    settings = LoraSettings(rank=options.rank, alpha=options.alpha)
    lora_model = add_lora(base, settings, seed=options.seed)  # B = 0: still the base model
    reader = _Features(lora_model, len(prompt.prefix), classify.features_pooling == "last+mean", tuple(classify.layers), device)
    # The start point: the plain head on the base model's features, computed here in torch (the
    # engine's differ in the last digits with its batching, and a run must repeat exactly).
    base_features = _embed(torch, reader, tokens, options.batch_size, progress)
    head, _ = train_head(base_features[fit_rows], [labels[i] for i in fit_rows], seed=options.seed)
    index = {label: i for i, label in enumerate(head.labels)}
    y = np.array([index[label] for label in labels])
    start_accuracy = float((head.logits(base_features[calibration_rows]).argmax(axis=1) == y[calibration_rows]).mean())
    trainable = _TrainableHead(torch, head, device)
    key = _run_key(model.path, spec, tokens, labels, fit_rows, options)
    trained = _train(torch, lora_model, reader, trainable, [tokens[i] for i in fit_rows], y[fit_rows], options, key, steps)

    calibration_features = _embed(torch, reader, [tokens[i] for i in calibration_rows], options.batch_size)
    with torch.no_grad():
        calibration_logits = trainable.logits(torch.tensor(calibration_features, device=device)).cpu().numpy()
    temperature = fit_temperature(calibration_logits, y[calibration_rows]) if calibration_rows else head.temperature
    accuracy = float((calibration_logits.argmax(axis=1) == y[calibration_rows]).mean()) if calibration_rows else float("nan")
    final = trainable.as_head(temperature)

    directory = version_dir(spec)
    final.save(directory / HEAD_FILE)
    config = base.config
    export_adapter(lora_state(lora_model), architecture=architecture, n_layers=config.num_hidden_layers,
                   n_head=config.num_attention_heads, n_head_kv=config.num_key_value_heads, alpha=options.alpha,
                   path=directory / ADAPTER_FILE)
    saved = save_task(spec)
    _checkpoint_path(key).unlink(missing_ok=True)
    report = LoraReport(
        steps=trained.steps, epochs=options.epochs, train_rows=len(fit_rows), calibration_rows=len(calibration_rows),
        tokens=trained.tokens, train_seconds=round(trained.seconds, 1),
        tokens_per_s=round(trained.tokens / trained.seconds, 1) if trained.seconds else 0.0,
        final_loss=round(trained.final_loss, 4), calibration_accuracy_head=round(start_accuracy, 4),
        calibration_accuracy=round(accuracy, 4), temperature=round(temperature, 4), resumed_at_step=trained.resumed_at,
    )
    train_report = TrainReport(len(fit_rows), len(head.labels), 0.0, accuracy, temperature)
    return FitResult(spec, saved, train_report), report


class _Features:
    """The torch twin of FeatureExtractor: one padded batch of token lists → (batch, dim) features."""

    def __init__(self, model: Any, prefix_len: int, with_mean: bool, layers: tuple[int, ...], device: str) -> None:
        self.model, self.prefix_len, self.with_mean, self.layers, self.device = model, prefix_len, with_mean, layers, device

    def __call__(self, batch: Sequence[Sequence[int]]) -> Any:
        import torch

        lengths = torch.tensor([len(tokens) for tokens in batch], device=self.device)
        width = int(lengths.max())
        ids = torch.full((len(batch), width), PAD_TOKEN, dtype=torch.long, device=self.device)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        positions = torch.arange(width, device=self.device)
        mask = positions[None, :] < lengths[:, None]
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


@dataclass
class _Trained:
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    resumed_at: int


def _train(torch: Any, model: Any, reader: _Features, head: _TrainableHead, tokens: list[list[int]], y: np.ndarray,
           options: LoraOptions, key: str, steps: StepProgress | None) -> _Trained:
    plan = _batches(tokens, options)
    adapters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": adapters, "lr": options.learning_rate, "weight_decay": 0.0},
        {"params": [head.coef, head.intercept], "lr": options.head_learning_rate, "weight_decay": 0.0},
    ])
    warmup = max(1, int(options.warmup_share * len(plan)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (len(plan) - step) / max(1, len(plan) - warmup))))
    start = _resume(torch, key, model, head, optimizer, schedule)
    if steps:
        steps.start(sum(len(tokens[i]) for batch in plan for i in batch))
        if start:
            steps.step(sum(len(tokens[i]) for batch in plan[:start] for i in batch), float("nan"))
    model.train()
    loss_value, trained_tokens, started = float("nan"), 0, time.perf_counter()
    target = torch.tensor(y, dtype=torch.long)
    for step in range(start, len(plan)):
        batch = plan[step]
        logits = head.logits(reader([tokens[i] for i in batch]))
        loss = torch.nn.functional.cross_entropy(logits, target[batch].to(logits.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapters + [head.coef, head.intercept], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(len(tokens[i]) for i in batch)
        trained_tokens += n_tokens
        # A smoothed loss: one batch of 16 is too noisy to read.
        value = float(loss.detach())
        loss_value = value if math.isnan(loss_value) else 0.9 * loss_value + 0.1 * value
        if steps:
            steps.step(n_tokens, loss_value)
        if (step + 1) % options.checkpoint_every == 0 and step + 1 < len(plan):
            _save_checkpoint(torch, key, step + 1, model, head, optimizer, schedule)
    return _Trained(len(plan), trained_tokens, time.perf_counter() - started, loss_value, start)


def _batches(tokens: list[list[int]], options: LoraOptions) -> list[np.ndarray]:
    """Every step's rows, fixed by the seed: each epoch a fresh shuffle, rows of similar length
    batched together within windows of 32 batches (less padding, still mixed)."""
    total_steps = max(1, math.ceil(options.epochs * len(tokens) / options.batch_size))
    lengths = np.array([len(t) for t in tokens])
    plan: list[np.ndarray] = []
    epoch = 0
    while len(plan) < total_steps:
        rng = np.random.default_rng([options.seed, epoch])
        order = rng.permutation(len(tokens))
        window = options.batch_size * 32
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + options.batch_size] for i in range(0, len(chunk), options.batch_size)]
        plan += [batches[i] for i in rng.permutation(len(batches))]
        epoch += 1
    return plan[:total_steps]


def _embed(torch: Any, reader: _Features, tokens: list[list[int]], batch_size: int,
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


def _run_key(model_path: Path, spec: TaskSpec, tokens: list[list[int]], labels: Sequence[str], fit_rows: list[int],
             options: LoraOptions) -> str:
    """Names a run's checkpoint: the same model file, data and options resume it; anything else starts afresh."""
    digest = hashlib.sha256()
    stat = model_path.stat()
    chosen = {k: v for k, v in asdict(options).items() if k not in ("checkpoint_every",)}
    digest.update(json.dumps([str(model_path), stat.st_size, stat.st_mtime_ns, spec.classify.model_dump(mode="json"), chosen],
                             sort_keys=True).encode())
    for i in fit_rows:
        digest.update(json.dumps([tokens[i], labels[i]]).encode())
    return f"{spec.name}-{digest.hexdigest()[:16]}"


def _checkpoint_path(key: str) -> Path:
    return checkpoints_dir() / f"{key}.pt"


def _save_checkpoint(torch: Any, key: str, step: int, model: Any, head: _TrainableHead, optimizer: Any, schedule: Any) -> None:
    path = _checkpoint_path(key)
    temporary = path.with_name(path.name + ".partial")
    adapters = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    torch.save({"step": step, "adapters": adapters, "coef": head.coef.detach().clone(), "intercept": head.intercept.detach().clone(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, temporary)
    with temporary.open("rb") as file:
        os.fsync(file.fileno())
    temporary.replace(path)


def _resume(torch: Any, key: str, model: Any, head: _TrainableHead, optimizer: Any, schedule: Any) -> int:
    """The step to start from: 0, or where the run's checkpoint stopped (its state loaded)."""
    path = _checkpoint_path(key)
    if not path.is_file():
        return 0
    saved = torch.load(path, weights_only=True)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["adapters"].items():
            parameters[name].copy_(value)
        head.coef.copy_(saved["coef"])
        head.intercept.copy_(saved["intercept"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    return int(saved["step"])
