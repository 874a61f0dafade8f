"""Drain, through the `drain3` package, as the baseline our own log parser has to beat.

Drain (He et al., ICWS 2017) groups lines with a fixed-depth prefix tree keyed on token count and
leading tokens, then merges a line into the most similar cluster of that leaf when the share of
equal tokens reaches ``sim_th``; a cluster's template keeps the tokens all its lines agree on and
puts ``<*>`` elsewhere.

Why this configuration: published Drain figures on Loghub use hand-written regexes per system
(block ids for HDFS, core ids for BGL, ...), which tunes the baseline to data it is scored on. Our
own parser must run unchanged on logs it has never seen, so the fair anchor is Drain with one
generic configuration for every system: mask only what is a variable in any log (IPv4 addresses
with an optional port, 0x hex numbers, standalone numbers), as drain3's own masking config does,
and keep drain3's defaults otherwise (``sim_th`` 0.4, depth 4). Expect lower scores than the
per-system-tuned figures in the literature; that gap is the price of generality, not a bug.

Each line is reported with its cluster's *final* template, taken after all lines are added: a
cluster's template only generalises as lines join it, and the template it had when an early line
arrived is not what an offline parse of the whole file produces.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

WILDCARD = "<*>"

# A value counts as standalone when no letter or digit touches it on either side, so "10" in
# "user10" or "0x1f" in "id0x1f" stays part of its word. Order matters: IPs before numbers, else
# "1.2.3.4" would become four numbers.
_EDGE_BEFORE = r"(?<![A-Za-z0-9])"
_EDGE_AFTER = r"(?![A-Za-z0-9])"
MASKS: tuple[tuple[str, str], ...] = (
    ("IP", _EDGE_BEFORE + r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?" + _EDGE_AFTER),
    ("HEX", _EDGE_BEFORE + r"0[xX][0-9a-fA-F]+" + _EDGE_AFTER),
    ("NUM", _EDGE_BEFORE + r"[-+]?\d+" + _EDGE_AFTER),
)
# Named masks (not "*" directly) keep drain3's similarity the same as with its documented config:
# drain3 counts "<*>" in a template as a wildcard, not as an equal token, so masking straight to
# "<*>" would lower the similarity of lines that differ only in masked values.
_MASK_TOKEN = re.compile("<(?:" + "|".join(name for name, _ in MASKS) + ")>")


@dataclass
class DrainResult:
    groups: list[int]  # drain3 cluster id of each line
    templates: list[str]  # each line's cluster's final template, every variable as "<*>"
    seconds: float  # wall time of the whole parse (masking, clustering, rendering)
    n_clusters: int


def _config(sim_th: float, depth: int) -> TemplateMinerConfig:
    # Built in code, never from a drain3.ini in the working directory, so the run is reproducible.
    config = TemplateMinerConfig()
    config.drain_sim_th = sim_th
    config.drain_depth = depth
    config.masking_instructions = [MaskingInstruction(pattern, name) for name, pattern in MASKS]
    config.mask_prefix = "<"
    config.mask_suffix = ">"
    return config


def render(template: str) -> str:
    """A drain3 template with every mask token (``<NUM>``, ``<IP>``, ``<HEX>``) written as ``<*>``."""
    return _MASK_TOKEN.sub(WILDCARD, template)


def run_drain(contents: Sequence[str], *, sim_th: float = 0.4, depth: int = 4) -> DrainResult:
    """Parse message contents (headers already removed) with drain3 in memory, no persistence."""
    start = time.perf_counter()
    miner = TemplateMiner(persistence_handler=None, config=_config(sim_th, depth))
    groups = [miner.add_log_message(content)["cluster_id"] for content in contents]
    final = {cluster.cluster_id: render(cluster.get_template()) for cluster in miner.drain.clusters}
    templates = [final[group] for group in groups]
    seconds = time.perf_counter() - start
    return DrainResult(groups=groups, templates=templates, seconds=seconds, n_clusters=len(final))
