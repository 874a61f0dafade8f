"""What calls cost: upstream tokens at per-million prices, local engine time at a price per CPU
second, and what sending everything to the large model would have cost instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# USD per million tokens (input, output), list prices; override or extend in prices.yaml.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-3.5-turbo": (0.50, 1.50),
}
DEFAULT_CPU_SECOND = 0.0000139  # USD: a 2-vCPU cloud VM at about $0.10/hour, per core-second


@dataclass
class PriceTable:
    per_million: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    cpu_second: float = DEFAULT_CPU_SECOND

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """Defaults, overridden by a YAML file: `models: {NAME: {input: USD, output: USD}}`, `cpu_second: USD`."""
        table = cls()
        if path is None or not path.is_file():
            return table
        import yaml

        data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for name, prices in (data.get("models") or {}).items():
            table.per_million[name] = (float(prices["input"]), float(prices["output"]))
        if "cpu_second" in data:
            table.cpu_second = float(data["cpu_second"])
        return table

    def upstream_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """None for a model without a price (a local upstream, for instance)."""
        prices = self.per_million.get(model)
        if prices is None:
            return None
        return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6

    def local_cost(self, cpu_seconds: float) -> float:
        return cpu_seconds * self.cpu_second
