"""`workhorse bench flywheel`: the learning loop end to end on a labelled dataset.

Round 0: a seed of k labelled rows per label trains the first version (a head on the seed, through
`train_and_gate`). Each later round sends the next slice of the train split as traffic through the
task's real pipeline (local answer → escalation policy → redaction → upstream over HTTP → call
log); the policy's threshold is set on the validation rows so that about `budget` of the items
escalate, and a hard cap stops escalating once `budget` of the round's traffic has gone upstream.
The call log then becomes a dataset (`dataset build`: feedback > data > upstream > confident local),
a candidate is trained on it and gated against the active version on the validation rows, and
promoted if it passes. After every round the active version is measured on the test split.

Which rows go where (all chosen by `seed`, none by the test split):
- seed: k rows per label of the train split; validation: the next v rows per label (the gates and
  the threshold; never traffic); traffic: the rest, shuffled, one slice per round.
- train rows whose text is also in the test split are dropped, so no test text reaches the call log.
- the test split is measured locally (no escalation, no call log) and chooses nothing.

The teacher is `teacher.GoldTeacher` (gold labels over loopback HTTP) unless an upstream is given.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workhorse.bench.teacher import TEACHER_MODEL, GoldTeacher
from workhorse.calllog import CallLog
from workhorse.calllog.prices import DEFAULT_PRICES, PriceTable
from workhorse.errors import WorkhorseError
from workhorse.escalation.curve import escalation_curve, rate_for_accuracy
from workhorse.escalation.policy import threshold_for_rate
from workhorse.escalation.upstream import UpstreamClient
from workhorse.evals.datasets import Dataset, Example, load, load_file
from workhorse.flywheel.candidates import Selection
from workhorse.flywheel.dataset import BuildOptions, Built, build_dataset
from workhorse.flywheel.split import SplitPercents, normalise
from workhorse.flywheel.train import Phases, TrainOutcome, train_and_gate
from workhorse.pipeline import Answer, build_pipeline
from workhorse.tasks.engines import TaskEngines, engine_config
from workhorse.tasks.spec import EscalationOptions, TaskSpec, UpstreamOptions
from workhorse.tasks.store import load_task

BATCH = 64  # items per pipeline call, as `workhorse run` sends them
PERFECT_TEACHER = "perfect (gold labels over loopback)"
TARGET_ACCURACY = 0.98  # escalation_rate_for_98: the share a perfect teacher must answer for this accuracy


@dataclass(frozen=True)
class FlywheelConfig:
    train: str  # dataset spec or file: the seed, the validation rows and the traffic come from it
    test: str  # dataset spec or file: measured after every round, never traffic, never used for a choice
    workdir: Path  # the call log, the seed file and the datasets built
    task: str = "flywheel"
    seed_per_label: int = 10
    validation_per_label: int = 10
    rounds: int = 3
    budget: float = 0.2  # the share of a round's traffic the teacher may label, at most
    traffic_per_round: int | None = None  # default: the traffic pool divided by the rounds
    method: str = "head"  # passed to train_and_gate, which checks it
    model: str = "gemma3-270m"
    seed: int = 0
    pseudo_labels: bool = False  # the small model's confident answers join the training rows
    min_confidence: float = 0.9  # … at or above this confidence
    margin: float = 0.005
    max_latency_ratio: float = 10.0  # only a gross slowdown fails: see the --max-latency-ratio help of `bench flywheel`
    gold_ceiling: bool = True  # also train the method on every gold label the loop could have seen
    threads: int = 2
    upstream: UpstreamOptions | None = None  # None: the perfect teacher
    prices: PriceTable | None = None  # default: list prices; the perfect teacher is priced as `teacher_priced_as`
    teacher_priced_as: str = "gpt-4o-mini"


@dataclass(frozen=True)
class Plan:
    labels: list[str]
    seed: list[Example]
    validation: list[Example]
    traffic: list[list[Example]]  # one slice per round
    pool: int  # train rows available as traffic
    dropped_test_overlap: int  # train rows whose text is in the test split
    dropped_repeats: int  # traffic rows repeating a seed or validation text


def plan(train: Dataset, test: Dataset, *, seed_per_label: int, validation_per_label: int, rounds: int,
         traffic_per_round: int | None, seed: int) -> Plan:
    """Seed, validation and traffic slices of the train split, chosen by `seed` alone."""
    test_texts = {normalise(ex.text) for ex in test.examples}
    by_label: defaultdict[str, list[Example]] = defaultdict(list)
    overlap = 0
    for example in train.examples:
        if normalise(example.text) in test_texts:
            overlap += 1
        elif example.label is not None:
            by_label[example.label].append(example)
    rng = random.Random(seed)
    seed_rows: list[Example] = []
    validation: list[Example] = []
    rest: list[Example] = []
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        seed_rows += rows[:seed_per_label]
        validation += rows[seed_per_label : seed_per_label + validation_per_label]
        rest += rows[seed_per_label + validation_per_label :]
    held = {normalise(ex.text) for ex in seed_rows + validation}
    pool = [ex for ex in rest if normalise(ex.text) not in held]
    rng.shuffle(pool)
    per_round = traffic_per_round if traffic_per_round is not None else len(pool) // rounds
    traffic = [pool[r * per_round : (r + 1) * per_round] for r in range(rounds)]
    return Plan(sorted(by_label), seed_rows, validation, traffic, len(pool), overlap, len(rest) - len(pool))


def gold_agreement(rows_file: Path, gold: dict[str, str]) -> dict[str, float]:
    """Per source of the dataset's rows from the call log, the share whose label is the gold one:
    1.0 for a perfect teacher's; for pseudo-labels (`local`), how often the small model's confident
    answers were right."""
    agree: defaultdict[str, list[bool]] = defaultdict(list)
    for row in map(json.loads, rows_file.read_text(encoding="utf-8").splitlines()):
        if row["source"] != "data" and row["text"] in gold:
            agree[row["source"]].append(row.get("label") == gold[row["text"]])
    return {source: sum(marks) / len(marks) for source, marks in sorted(agree.items())}


class _Quiet:
    def advance(self, n: int = 1, *, detail: str | None = None) -> None:
        pass


@contextmanager
def quiet(label: str, total: int | None = None, *, unit: str = "items") -> Iterator[_Quiet]:
    yield _Quiet()


# A phase's progress, as `workhorse.cli.progress.progress` reports it: (label, total, unit=…) → a bar with advance(n)
Progress = Phases


def run(config: FlywheelConfig, *, progress: Progress = quiet, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """The rounds, measured; returns the report (see docs/flywheel.md, "bench flywheel")."""
    started = time.perf_counter()
    if not 0.0 <= config.budget <= 1.0:
        raise WorkhorseError(f"budget {config.budget} is not a share between 0 and 1", "give --budget 0.2 for 20 %")
    train_split, test_split = load(config.train), load(config.test)
    for data in (train_split, test_split):
        if data.kind != "classify":
            raise WorkhorseError(f"{data.name}:{data.split} is not single-label classification data",
                                 "bench flywheel measures classify tasks: give rows with a `label`")
    chosen = plan(train_split, test_split, seed_per_label=config.seed_per_label,
                  validation_per_label=config.validation_per_label, rounds=config.rounds,
                  traffic_per_round=config.traffic_per_round, seed=config.seed)
    if not all(chosen.traffic):
        raise WorkhorseError(f"{chosen.pool} rows are left for traffic after the seed and the validation rows: not enough for "
                             f"{config.rounds} rounds" + (f" of {config.traffic_per_round}" if config.traffic_per_round else ""),
                             "lower --rounds, --traffic-per-round, --seed-per-label or --validation-per-label")
    language = train_split.language
    seed_rows = Dataset("seed", "train", chosen.seed, chosen.labels, "classify", language)
    validation = Dataset("validation", "train", chosen.validation, chosen.labels, "classify", language)
    config.workdir.mkdir(parents=True, exist_ok=True)
    seed_file = config.workdir / "seed.jsonl"
    seed_file.write_text("".join(json.dumps({"text": ex.text, "label": ex.label}) + "\n" for ex in chosen.seed))
    gold = {ex.text: ex.label for part in chosen.traffic for ex in part if ex.label is not None}

    with ExitStack() as stack:
        if config.upstream is None:
            teacher: GoldTeacher | None = stack.enter_context(GoldTeacher(gold, task=config.task))
            upstream_options = teacher.upstream_options()
            listed = config.prices or PriceTable()
            prices = PriceTable({**listed.per_million, TEACHER_MODEL: DEFAULT_PRICES[config.teacher_priced_as]}, listed.cpu_second)
            teacher_name = PERFECT_TEACHER
        else:
            teacher, upstream_options, prices = None, config.upstream, config.prices or PriceTable()
            teacher_name = f"{config.upstream.model} at {config.upstream.base_url}"
        call_log = stack.enter_context(CallLog(config.workdir / "calls.db"))
        # An engine per (model, adapter): a LoRA version answers on its own adapter, the others share the model's.
        engines = stack.enter_context(TaskEngines(engine_config(threads=config.threads, kinds=["classify"])))
        loop = _Loop(config, engines, validation, test_split, progress, log)

        rounds = []
        round_started = time.perf_counter()
        outcome = loop.train(0, seed_rows)
        rounds.append(loop.report(0, round_started, outcome, traffic_rows=0, train_rows=len(chosen.seed),
                                  rows_by_source={"data": len(chosen.seed)}))
        for number, traffic in enumerate(chosen.traffic, start=1):
            round_started = time.perf_counter()
            escalated = loop.traffic(number, traffic, upstream_options, call_log, prices)
            built = loop.dataset(number, call_log, seed_file)
            train_rows = load_file(built.directory / "train.jsonl")
            outcome = loop.train(number, train_rows)
            rounds.append(loop.report(number, round_started, outcome, traffic_rows=len(traffic),
                                      train_rows=built.manifest["counts"]["rows"],
                                      rows_by_source=built.manifest["counts"]["sources"],
                                      gold_agreement_by_source=gold_agreement(built.directory / "train.jsonl", gold),
                                      **escalated))
        ceiling = loop.gold_ceiling(chosen) if config.gold_ceiling else None

    return {
        "data": {"train": config.train, "test": config.test, "train_split_rows": len(train_split.examples),
                 "test_split_rows": len(test_split.examples), "labels": len(chosen.labels), "seed_rows": len(chosen.seed),
                 "validation_rows": len(chosen.validation), "traffic_pool_rows": chosen.pool,
                 "traffic_rows": sum(len(part) for part in chosen.traffic),
                 "dropped_test_overlap": chosen.dropped_test_overlap, "dropped_repeats": chosen.dropped_repeats},
        "teacher": teacher_name,
        "teacher_stats": teacher.stats.as_dict() if teacher is not None else None,
        "upstream_priced_as": config.teacher_priced_as if teacher is not None else config.upstream.model,  # type: ignore[union-attr]
        "method": config.method,
        "model": config.model,
        "seed": config.seed,
        "seed_per_label": config.seed_per_label,
        "validation_per_label": config.validation_per_label,
        "budget": config.budget,
        "pseudo_labels": config.pseudo_labels,
        "min_confidence": config.min_confidence if config.pseudo_labels else None,
        "rounds": rounds,
        "gold_ceiling_accuracy": ceiling["test_accuracy"] if ceiling else None,
        "gold_ceiling": ceiling,
        "seconds": time.perf_counter() - started,
        "workdir": str(config.workdir),
    }


class _Loop:
    """The steps of a round, sharing the run's engines, validation rows and test measurements."""

    def __init__(self, config: FlywheelConfig, engines: TaskEngines, validation: Dataset, test: Dataset,
                 progress: Progress, log: Callable[[str], None]) -> None:
        self.config = config
        self.engines = engines
        self.validation = validation
        self.test = test
        self.progress = progress
        self.log = log
        self._tested: dict[tuple[str, int], dict[str, Any]] = {}  # (task, version) → its test figures
        self._phase_s: dict[str, float] = {}

    # -- the steps -----------------------------------------------------------------------------
    def train(self, number: int, rows: Dataset, *, task: str | None = None, label: str | None = None) -> TrainOutcome:
        config = self.config
        task = task or config.task
        label = label or f"round {number}"
        started = time.perf_counter()

        def phases(phase: str, total: int | None = None, *, unit: str = "items") -> AbstractContextManager[Any]:
            return self.progress(f"{label}: {phase}", total, unit=unit)

        outcome = train_and_gate(task, rows, self.validation, method=config.method, margin=config.margin,
                                 max_latency_ratio=config.max_latency_ratio, threads=config.threads, model=config.model,
                                 phases=phases)
        self._phase_s["train"] = time.perf_counter() - started
        verdict = "promoted" if outcome.promoted else "not promoted"
        self.log(f"{label}: v{outcome.fitted.spec.version} {verdict}: {'; '.join(outcome.gate.reasons)}")
        return outcome

    def traffic(self, number: int, traffic: Sequence[Example], upstream: UpstreamOptions, call_log: CallLog,
                prices: PriceTable) -> dict[str, Any]:
        """The round's traffic through the active version's pipeline, escalating at most `budget` of it."""
        started = time.perf_counter()
        spec, directory = load_task(self.config.task)
        budget = self.config.budget
        allowance = int(budget * len(traffic) + 1e-9)
        threshold = self._threshold(number, spec, directory) if 0 < budget < 1 else None
        mode = "always" if budget >= 1 else "threshold"
        escalation = EscalationOptions(mode=mode, threshold=threshold or 0.0, target_rate=budget if threshold is not None else None,
                                       privacy=spec.escalation.privacy, upstream=upstream)
        escalating = spec.model_copy(update={"escalation": escalation})
        client = UpstreamClient(upstream)
        engine = self.engines.for_task(spec, directory)
        sending = build_pipeline(escalating, directory, engine, call_log=call_log, upstream=client, prices=prices)
        local = build_pipeline(spec, directory, engine, call_log=call_log, escalate=False, prices=prices)
        try:
            with self.progress(f"round {number}: traffic through v{spec.version}", len(traffic)) as bar:
                done = 0
                while done < len(traffic):
                    left = allowance - sending.tally.escalated
                    pipeline, size = (sending, min(BATCH, left)) if left > 0 else (local, BATCH)
                    chunk = traffic[done : done + size]
                    pipeline.run([ex.text for ex in chunk], refs=[ex.id for ex in chunk])
                    done += len(chunk)
                    bar.advance(len(chunk))
        finally:
            sending.close()
            local.close()
        tally = sending.tally.summary()
        self._phase_s["traffic"] = time.perf_counter() - started
        return {"upstream_calls": tally["escalated"], "upstream_failed": tally["escalation_failed"],
                "upstream_cost": tally["upstream_cost"], "threshold": threshold, "served_by": spec.version}

    def dataset(self, number: int, call_log: CallLog, seed_file: Path) -> Built:
        started = time.perf_counter()
        sources = {"feedback", "data", "upstream"} | ({"local"} if self.config.pseudo_labels else set())
        options = BuildOptions(selection=Selection(frozenset(sources), self.config.min_confidence),
                               percents=SplitPercents(test=0, validation=0),  # the gate's rows are the validation rows
                               data=(str(seed_file),))
        spec, _ = load_task(self.config.task)
        built = build_dataset(spec, self.config.workdir / "datasets" / self.config.task, options, call_log)
        self._phase_s["dataset"] = time.perf_counter() - started
        self.log(f"round {number}: dataset {built.directory.name}: {built.manifest['counts']['rows']} rows "
                 f"{built.manifest['counts']['sources']}")
        return built

    def gold_ceiling(self, chosen: Plan) -> dict[str, Any]:
        """The same method on every gold label the loop could have seen (seed and the whole traffic pool)."""
        started = time.perf_counter()
        everything = chosen.seed + [ex for part in chosen.traffic for ex in part]
        rows = Dataset("gold", "train", everything, chosen.labels, "classify", self.validation.language)
        task = f"{self.config.task}-gold-ceiling"
        outcome = self.train(0, rows, task=task, label="gold ceiling")
        tested = self.tested(task, "gold ceiling")
        return {"train_rows": len(everything), "version": outcome.fitted.spec.version, **tested,
                "seconds": time.perf_counter() - started}

    def report(self, number: int, started: float, outcome: TrainOutcome, *, traffic_rows: int, train_rows: int,
               rows_by_source: dict[str, int], **figures: Any) -> dict[str, Any]:
        tested = self.tested(self.config.task, f"round {number}")
        calls = figures.pop("upstream_calls", 0)
        row = {
            "round": number,
            "traffic_rows": traffic_rows,
            "train_rows": train_rows,
            "rows_by_source": rows_by_source,
            **tested,
            "upstream_calls": calls,
            "upstream_rate": calls / traffic_rows if traffic_rows else 0.0,
            "upstream_cost": figures.pop("upstream_cost", 0.0),
            **figures,
            "candidate_version": outcome.fitted.spec.version,
            "promoted": outcome.promoted,
            "gate": {"candidate_accuracy": outcome.gate.candidate.accuracy,
                     "incumbent_accuracy": outcome.gate.incumbent.accuracy if outcome.gate.incumbent else None,
                     "reasons": outcome.gate.reasons},
            "lora": outcome.lora.as_dict() if outcome.lora else None,
            "phase_seconds": {name: round(s, 1) for name, s in self._phase_s.items()},
            "seconds": time.perf_counter() - started,
        }
        self._phase_s = {}
        return row

    # -- measuring -----------------------------------------------------------------------------
    def tested(self, task: str, label: str) -> dict[str, Any]:
        """The active version of `task` on the test split: accuracy, the share a perfect teacher must
        answer for 98 % accuracy, and the accuracy with `budget` of it answered (measured once per version)."""
        spec, directory = load_task(task)
        key = (task, spec.version)
        if key not in self._tested:
            started = time.perf_counter()
            answers = self._answers(spec, directory, self.test, f"{label}: test v{spec.version}")
            truth = [ex.label for ex in self.test.examples]
            predicted = [a.answer for a in answers]
            confidence = [a.confidence if a.confidence is not None else 0.0 for a in answers]
            n = len(truth)
            [at_budget] = escalation_curve(truth, predicted, confidence, points=2, max_rate=self.config.budget)[1:]
            self._tested[key] = {
                "version": spec.version,
                "test_accuracy": sum(p == t for p, t in zip(predicted, truth, strict=True)) / n,
                "escalation_rate_for_98": rate_for_accuracy(truth, predicted, confidence, TARGET_ACCURACY),
                "test_accuracy_with_teacher_at_budget": at_budget["accuracy"],
            }
            self._phase_s["test"] = time.perf_counter() - started
        return dict(self._tested[key])

    def _threshold(self, number: int, spec: TaskSpec, directory: Path) -> float:
        """The confidence below which `budget` of the validation rows fall, for the active version."""
        started = time.perf_counter()
        answers = self._answers(spec, directory, self.validation, f"round {number}: threshold on validation")
        self._phase_s["threshold"] = time.perf_counter() - started
        return threshold_for_rate([a.confidence if a.confidence is not None else 0.0 for a in answers], self.config.budget)

    def _answers(self, spec: TaskSpec, directory: Path, data: Dataset, label: str) -> list[Answer]:
        """Local answers only: no escalation, nothing logged."""
        pipeline = build_pipeline(spec, directory, self.engines.for_task(spec, directory), escalate=False)
        answers: list[Answer] = []
        try:
            with self.progress(label, len(data.examples)) as bar:
                for start in range(0, len(data.examples), BATCH):
                    chunk = [ex.text for ex in data.examples[start : start + BATCH]]
                    answers += pipeline.run(chunk)
                    bar.advance(len(chunk))
        finally:
            pipeline.close()
        return answers

