"""The llama.cpp runtime: models, LoRA adapters, batched evaluation, prefix snapshots, sampling, generation."""

from workhorse.engine.adapter import Adapter, write_adapter
from workhorse.engine.constraints import ChoiceConstraint, GrammarConstraint, JsonSchemaConstraint, RegexConstraint
from workhorse.engine.engine import Engine, EngineConfig, EngineStats, EvalRequest, EvalResult
from workhorse.engine.evaluator import Evaluator
from workhorse.engine.generation import GenerateRequest, GenerateResult, GenerationBatch, generate
from workhorse.engine.model import LlamaModel
from workhorse.engine.prefix_cache import PrefixCacheStats
from workhorse.engine.sampling import Sampler, SamplingParams, TokenConstraint
from workhorse.engine.worker import EngineWorker

__all__ = [
    "Adapter",
    "ChoiceConstraint",
    "GrammarConstraint",
    "JsonSchemaConstraint",
    "RegexConstraint",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "EngineWorker",
    "EvalRequest",
    "EvalResult",
    "Evaluator",
    "GenerateRequest",
    "GenerateResult",
    "GenerationBatch",
    "LlamaModel",
    "PrefixCacheStats",
    "Sampler",
    "SamplingParams",
    "TokenConstraint",
    "generate",
    "write_adapter",
]
