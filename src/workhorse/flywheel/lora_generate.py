"""LoRA for extract and convert tasks: supervised fine-tuning on the answers the task should give.

For each row (its text, its answer: an object for extract and JSON converts, a string for a
value convert) the training sequence is what the engine sees and what it should say: the task's
prompt around the item, then the answer's tokens as the grammar writes them and the token that
ends the model's turn (both from `StructuredPrompt`, the one home of these tokens). The loss is
the cross-entropy of the answer's tokens only; the vocabulary projection runs only at the
positions that predict them (150k–260k rows at every prompt token would be most of the cost).

Rows without an answer the grammar could write (none given, not valid against the schema, not
matching the pattern) are left out and counted. The adapter is exported to llama.cpp's GGUF LoRA
format with the version. The loop, its checkpoints (an interrupted run resumes) and its
determinism are `lora_loop`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workhorse.engine import LlamaModel
from workhorse.errors import TaskError
from workhorse.evals.datasets import Dataset
from workhorse.flywheel.lora_loop import LoraOptions, StepProgress, export, padded, remove_checkpoint, run_key, train_steps
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model, pick_device, require_torch
from workhorse.tasks.fit import FitResult
from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import ADAPTER_FILE, save_task, version_dir
from workhorse.tasks.structured import StructuredPrompt

IGNORED = -100  # the label of a position the loss leaves out (the prompt's tokens)
GENERATED_KINDS = ("extract", "convert")


@dataclass(frozen=True)
class TrainingSequence:
    tokens: list[int]  # the prompt with the item, the answer, the end of the turn
    labels: list[int]  # the token itself where it belongs to the answer, IGNORED elsewhere

    @property
    def prompt_len(self) -> int:
        return next(i for i, label in enumerate(self.labels) if label != IGNORED)


@dataclass(frozen=True)
class GenerateReport:
    steps: int
    epochs: float
    train_rows: int
    skipped_rows: int  # rows without an answer the grammar could write
    tokens: int
    answer_tokens: int  # of the rows trained on, once each
    train_seconds: float
    tokens_per_s: float
    final_loss: float  # per answer token, smoothed
    resumed_at_step: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        skipped = f"; {self.skipped_rows} rows without a valid answer left out" if self.skipped_rows else ""
        return (f"LoRA: {self.steps} steps, {self.tokens:,} tokens in {self.train_seconds:.0f} s ({self.tokens_per_s:,.0f} tokens/s); "
                f"loss per answer token {self.final_loss:.4f}{skipped}")


def training_sequence(prompt: StructuredPrompt, text: str, answer: Any) -> TrainingSequence | None:
    """The tokens of one row and their labels; None when the grammar could not write `answer`."""
    if answer is None:
        return None
    answer_tokens = prompt.answer_tokens(answer)
    if answer_tokens is None:
        return None
    tokens = prompt.tokens(text)
    return TrainingSequence(tokens + answer_tokens, [IGNORED] * len(tokens) + answer_tokens)


def fit_lora_generate(spec: TaskSpec, data: Dataset, model: LlamaModel, *, options: LoraOptions = LoraOptions(),
                      progress: Callable[[int], None] | None = None,
                      steps: StepProgress | None = None) -> tuple[FitResult, GenerateReport]:
    """Train an adapter for `spec` (an extract or convert version of `model`) on `data`'s answers;
    save it with the version, which stays inactive until promoted. `progress` hears of the rows
    prepared, `steps` of the training steps."""
    if spec.kind not in GENERATED_KINDS:
        raise TaskError(f"task {spec.name} is a {spec.kind} task: answers are trained for extract and convert tasks",
                        "train a classify task with fit_lora")
    torch = require_torch()
    device = pick_device(options.device)
    prompt = StructuredPrompt(spec, model)
    sequences = []
    for example in data.examples:
        sequence = training_sequence(prompt, example.text, example.target)
        if sequence is not None:
            sequences.append(sequence)
        if progress:
            progress(1)
    skipped = len(data.examples) - len(sequences)
    if not sequences:
        raise TaskError(f"none of the {len(data.examples)} rows has an answer task {spec.name} could give",
                        "each row needs its whole answer (`answer`, or `fields` for an object) valid against the task's "
                        "schema, with every required property")

    causal, architecture = load_model(model.path, language_model=True, device=device, threads=options.threads)
    lora_model = add_lora(causal, LoraSettings(rank=options.rank, alpha=options.alpha, targets=options.targets), seed=options.seed)
    loss = AnswerLoss(lora_model.get_base_model(), device, reduction="sum")
    key = run_key(spec.name, model.path, {"kind": spec.kind}, ([s.tokens, s.labels] for s in sequences), options)
    trained = train_steps(torch, lora_model, lambda batch: loss([sequences[i] for i in batch]),
                          [len(s.tokens) for s in sequences], options, key, steps,
                          weights=[len(s.labels) - s.prompt_len for s in sequences])

    directory = version_dir(spec)
    export(lora_model, causal.config, architecture, options, directory / ADAPTER_FILE)
    saved = save_task(spec)
    remove_checkpoint(key)
    report = GenerateReport(
        steps=trained.steps, epochs=options.epochs, train_rows=len(sequences), skipped_rows=skipped, tokens=trained.tokens,
        answer_tokens=sum(len(s.labels) - s.prompt_len for s in sequences), train_seconds=round(trained.seconds, 1),
        tokens_per_s=trained.tokens_per_s, final_loss=round(trained.final_loss, 4), resumed_at_step=trained.resumed_at,
    )
    return FitResult(spec, saved, None), report


class AnswerLoss:
    """The cross-entropy of a batch's answer tokens (their mean, or with reduction="sum" their
    sum): the transformer over every token, the vocabulary projection only where the next token
    is an answer's."""

    def __init__(self, causal: Any, device: str, reduction: str = "mean") -> None:
        self.causal, self.device, self.reduction = causal, device, reduction
        self.softcap = getattr(causal.config, "final_logit_softcapping", None)  # Gemma's, where set

    def __call__(self, batch: Sequence[TrainingSequence]) -> Any:
        import torch

        logits, targets = self.answer_logits(batch)
        return torch.nn.functional.cross_entropy(logits, targets, reduction=self.reduction)

    def answer_logits(self, batch: Sequence[TrainingSequence]) -> tuple[Any, Any]:
        """(logits at the positions that predict an answer token, those tokens), row after row."""
        import torch

        ids, mask, _ = padded([s.tokens for s in batch], self.device)
        labels = torch.full_like(ids, IGNORED)
        for row, sequence in enumerate(batch):
            labels[row, : len(sequence.labels)] = torch.tensor(sequence.labels, dtype=torch.long)
        hidden = self.causal.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        # The state at position p predicts the token at p + 1.
        targets = labels[:, 1:]
        chosen = targets != IGNORED
        logits = self.causal.lm_head(hidden[:, :-1][chosen]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits, targets[chosen]

