"""The feature model in torch, for training: the task's GGUF loaded dequantized through
transformers (the `train` extra: torch CPU build, transformers, peft), with LoRA adapters on its
linear layers. Nothing here is imported unless a LoRA method runs."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workhorse.errors import TaskError
from workhorse.models.gguf_header import gguf_metadata

TRAIN_EXTRA_HINT = (
    "install the train extra: pip install 'workhorse[train]' (torch's CPU build: add "
    "--extra-index-url https://download.pytorch.org/whl/cpu where pip would pick a CUDA build)"
)
# The linear layers of one transformer block, by their transformers names.
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FEED_FORWARD = ("gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ATTENTION + FEED_FORWARD


def lora_targets(choice: str) -> tuple[str, ...]:
    """`all`, `attention`, or comma-separated layer names, as the layers' names."""
    named = {"all": DEFAULT_TARGETS, "attention": ATTENTION}
    if choice in named:
        return named[choice]
    chosen = tuple(name.strip() for name in choice.split(",") if name.strip())
    unknown = [name for name in chosen if name not in DEFAULT_TARGETS]
    if unknown or not chosen:
        raise TaskError(f"unknown LoRA target {', '.join(unknown) or choice!r}",
                        f"use all, attention, or some of: {', '.join(DEFAULT_TARGETS)}")
    return chosen


def require_torch() -> Any:
    """The torch module, or a TaskError that says how to install the training stack."""
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as error:
        raise TaskError(f"LoRA training needs torch, transformers and peft ({error.name} is not installed)", TRAIN_EXTRA_HINT) from None
    return torch


def pick_device(device: str) -> str:
    torch = require_torch()
    if device == "cuda" and not torch.cuda.is_available():
        raise TaskError("--device cuda: torch sees no CUDA device", "train with --device cpu, or install torch's CUDA build on a GPU machine")
    if device not in ("cpu", "cuda"):
        raise TaskError(f"unknown device {device!r}", "use --device cpu or --device cuda")
    return device


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS


def load_model(gguf_path: Path, *, language_model: bool = False, device: str = "cpu", threads: int | None = None) -> tuple[Any, str]:
    """(the model in float32, its GGUF architecture). By default the transformer without its
    vocabulary projection (262k rows on Gemma 3): a classification head reads the final hidden
    states, so training never pays for it; `language_model=True` keeps it, for training on answer tokens."""
    torch = require_torch()
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    gguf_path = Path(gguf_path)
    with _quiet():
        causal = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    causal.config.use_cache = False
    model = causal if language_model else causal.model
    return model.to(device), str((gguf_metadata(gguf_path) or {}).get("architecture") or "")


def add_lora(model: Any, settings: LoraSettings, *, seed: int) -> Any:
    """`model` with fresh LoRA adapters (A random from `seed`, B zero: the model starts unchanged)."""
    torch = require_torch()
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(settings.targets), lora_dropout=0.0, bias="none")
    with _quiet():
        return get_peft_model(model, config)


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' and peft's progress bars, notices and deprecation warnings are noise on a
    training run's stderr (the GGUF loader's bar writes to stderr whatever the settings say)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)
