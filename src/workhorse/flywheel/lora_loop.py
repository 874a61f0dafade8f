"""What every LoRA method shares: its options, the model with adapters, the training loop (batches
of similar length, warm-up then linear decay, gradient clipping, progress in tokens with the
loss), its checkpoints and the export of the adapter.

A method supplies the summed loss of some rows (`loss_of`), each row's share of a step's loss
(`weights`: 1 per row, or its answer tokens) and any parameters it trains beside the adapters (a
classification head: `extra`, at `head_learning_rate`). A step's rows go through the model in
passes of at most `max_pass_tokens` padded tokens, their gradients summed: the activations of a
whole batch of long prompts would not fit in memory (16 prompts of 450 tokens on a 0.5B model
need over 20 GB).

Fixed seed, fixed thread count: the same adapter. A checkpoint every `checkpoint_every` steps
(under `$WORKHORSE_HOME/checkpoints/`, keyed by the model, the data and the options) lets an
interrupted run resume where it stopped; the method removes it when the run completes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workhorse.flywheel.adapter_gguf import export_adapter, lora_state
from workhorse.flywheel.torch_model import DEFAULT_TARGETS
from workhorse.paths import checkpoints_dir

PAD_TOKEN = 0  # any id: padded positions are masked out and come after every real token
CHECKPOINT_FORMAT = 2  # part of a run's key: a checkpoint of another layout is never read


@dataclass(frozen=True)
class LoraOptions:
    epochs: float = 2.0
    rank: int = 8
    alpha: float = 16.0
    # Which linear layers of each block get adapters (transformers' names). Every one trains best;
    # each adapted layer also costs llama.cpp two small products per token when serving.
    targets: tuple[str, ...] = DEFAULT_TARGETS
    learning_rate: float = 3e-4  # the adapters'
    head_learning_rate: float = 1e-3  # what a method trains beside the adapters (a classification head)
    batch_size: int = 16
    max_pass_tokens: int = 2048  # padded tokens through the model at once; a step may take several passes
    warmup_share: float = 0.06
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    checkpoint_every: int = 100  # steps


class StepProgress(Protocol):
    """What a LoRA run says as it goes: the tokens of all its steps up front (and of those a
    resumed run already did), then each step's."""

    def start(self, total_tokens: int, done_tokens: int = 0) -> None: ...

    def step(self, tokens: int, loss: float) -> None: ...


@dataclass
class Trained:
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    resumed_at: int

    @property
    def tokens_per_s(self) -> float:
        return round(self.tokens / self.seconds, 1) if self.seconds else 0.0


def padded(batch: Sequence[Sequence[int]], device: str) -> tuple[Any, Any, Any]:
    """(ids, attention mask, lengths) of token lists padded on the right to the longest."""
    import torch

    lengths = torch.tensor([len(tokens) for tokens in batch], device=device)
    width = int(lengths.max())
    ids = torch.full((len(batch), width), PAD_TOKEN, dtype=torch.long, device=device)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    return ids, mask, lengths


def train_steps(torch: Any, model: Any, loss_of: Callable[[np.ndarray], Any], lengths: Sequence[int], options: LoraOptions,
                key: str, steps: StepProgress | None, *, weights: Sequence[int] | None = None,
                extra: dict[str, Any] | None = None) -> Trained:
    """Train `model`'s adapters (and `extra`) for `options.epochs` over rows of these token
    lengths; `loss_of(rows)` is the summed loss of those rows, each weighing `weights[row]` (1 by
    default): a step minimises their mean. Resumes from the run's checkpoint when there is one."""
    extra = extra or {}
    weights = weights if weights is not None else [1] * len(lengths)
    plan = batches(lengths, options)
    adapters = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": adapters, "lr": options.learning_rate, "weight_decay": 0.0}]
    if extra:
        groups.append({"params": list(extra.values()), "lr": options.head_learning_rate, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    warmup = max(1, int(options.warmup_share * len(plan)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (len(plan) - step) / max(1, len(plan) - warmup))))
    start = _resume(torch, key, model, extra, optimizer, schedule)
    if steps:
        steps.start(sum(lengths[i] for batch in plan for i in batch), sum(lengths[i] for batch in plan[:start] for i in batch))
    model.train()
    loss_value, trained_tokens, started = float("nan"), 0, time.perf_counter()
    for step in range(start, len(plan)):
        batch = plan[step]
        total_weight = max(1, sum(weights[i] for i in batch))
        value = 0.0
        for rows in passes(batch, lengths, options.max_pass_tokens):
            loss = loss_of(rows) / total_weight
            loss.backward()
            value += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(adapters + list(extra.values()), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(lengths[i] for i in batch)
        trained_tokens += n_tokens
        # A smoothed loss: one batch of 16 is too noisy to read.
        loss_value = value if math.isnan(loss_value) else 0.9 * loss_value + 0.1 * value
        if steps:
            steps.step(n_tokens, loss_value)
        if (step + 1) % options.checkpoint_every == 0 and step + 1 < len(plan):
            _save_checkpoint(torch, key, step + 1, model, extra, optimizer, schedule)
    return Trained(len(plan), trained_tokens, time.perf_counter() - started, loss_value, start)


def batches(lengths: Sequence[int], options: LoraOptions) -> list[np.ndarray]:
    """Every step's rows, fixed by the seed: each epoch a fresh shuffle, rows of similar length
    batched together within windows of 32 batches (less padding, still mixed)."""
    total_steps = max(1, math.ceil(options.epochs * len(lengths) / options.batch_size))
    by_length = np.array(lengths)
    plan: list[np.ndarray] = []
    epoch = 0
    while len(plan) < total_steps:
        rng = np.random.default_rng([options.seed, epoch])
        order = rng.permutation(len(lengths))
        window = options.batch_size * 32
        chunks = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(by_length[chunk], kind="stable")]
            chunks += [chunk[i : i + options.batch_size] for i in range(0, len(chunk), options.batch_size)]
        plan += [chunks[i] for i in rng.permutation(len(chunks))]
        epoch += 1
    return plan[:total_steps]


def passes(batch: np.ndarray, lengths: Sequence[int], max_pass_tokens: int) -> list[np.ndarray]:
    """`batch` cut, in order, into runs of rows whose padded size (rows × the longest) stays
    within `max_pass_tokens`; a row longer than that goes alone."""
    runs: list[np.ndarray] = []
    start, longest = 0, 0
    for end in range(len(batch)):
        longest = max(longest, lengths[batch[end]])
        if end > start and (end - start + 1) * longest > max_pass_tokens:
            runs.append(batch[start:end])
            start, longest = end, lengths[batch[end]]
    runs.append(batch[start:])
    return runs


def export(lora_model: Any, config: Any, architecture: str, options: LoraOptions, path: Path) -> Path:
    """The trained adapters in llama.cpp's GGUF LoRA format, at `path`."""
    return export_adapter(lora_state(lora_model), architecture=architecture, n_layers=config.num_hidden_layers,
                          n_head=config.num_attention_heads, n_head_kv=config.num_key_value_heads, alpha=options.alpha,
                          path=path)


def run_key(name: str, model_path: Path, described: Any, rows: Iterable[Any], options: LoraOptions) -> str:
    """Names a run's checkpoint: the same model file, method settings (`described`), rows and
    options resume it; anything else starts afresh."""
    digest = hashlib.sha256()
    stat = model_path.stat()
    chosen = {k: v for k, v in asdict(options).items() if k not in ("checkpoint_every",)}
    digest.update(json.dumps([CHECKPOINT_FORMAT, str(model_path), stat.st_size, stat.st_mtime_ns, described, chosen],
                             sort_keys=True).encode())
    for row in rows:
        digest.update(json.dumps(row).encode())
    return f"{name}-{digest.hexdigest()[:16]}"


def remove_checkpoint(key: str) -> None:
    _checkpoint_path(key).unlink(missing_ok=True)


def _checkpoint_path(key: str) -> Path:
    return checkpoints_dir() / f"{key}.pt"


def _save_checkpoint(torch: Any, key: str, step: int, model: Any, extra: dict[str, Any], optimizer: Any, schedule: Any) -> None:
    path = _checkpoint_path(key)
    temporary = path.with_name(path.name + ".partial")
    adapters = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    torch.save({"step": step, "adapters": adapters, "extra": {name: p.detach().clone() for name, p in extra.items()},
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, temporary)
    with temporary.open("rb") as file:
        os.fsync(file.fileno())
    temporary.replace(path)


def _resume(torch: Any, key: str, model: Any, extra: dict[str, Any], optimizer: Any, schedule: Any) -> int:
    """The step to start from: 0, or where the run's checkpoint stopped (its state loaded)."""
    path = _checkpoint_path(key)
    if not path.is_file():
        return 0
    saved = torch.load(path, weights_only=True)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["adapters"].items():
            parameters[name].copy_(value)
        for name, value in saved["extra"].items():
            extra[name].copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    return int(saved["step"])
