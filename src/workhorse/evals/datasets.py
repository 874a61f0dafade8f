"""Loaders for the shared evaluation datasets and for users' own data files.

`load("banking77:test")` reads a public dataset from the datasets folder (see `datasets_root`);
`load("tickets.jsonl")` or `load_file(path)` reads a user's JSONL or CSV file. Every loader
returns a `Dataset` of `Example`s whose ids are stable: the source file's row (or line) index,
so results from different runs and from the classification and extraction views of one dataset
can be joined.

Splits the sources do not define are made here, deterministically, and each `Dataset.note` says
how: NLU++ train/test by fold, SMP2019 by a seeded stratified 80/20 split.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from workhorse.datafile import CSV_HINT, JSONL_HINT, BadRow, guess_format, open_rows, read_rows
from workhorse.errors import DatasetFormatError, DatasetNotFoundError

ROOT_ENV = "WORKHORSE_DATASETS"
OOS = "oos"
_REPO_ROOT = Path(__file__).resolve().parents[3]  # src/workhorse/evals/datasets.py -> the repository

Kind = Literal["classify", "multilabel", "extract"]
BAD_ROWS_SHOWN = 10  # a file with more bad rows is named with the first ones and a count


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None = None  # single-label intent ("oos" for out-of-scope in clinc150)
    labels: tuple[str, ...] = ()  # multi-label intents (nlupp)
    fields: dict[str, Any] | None = None  # extraction target: field name -> value or list of values
    id: str = ""  # stable within the dataset, e.g. "banking77:test:17"
    answer: Any = None  # an extract or convert task's whole answer, when the row gives one (a converted value, say)

    @property
    def target(self) -> Any:
        """What an extract or convert task should answer: the row's `answer`, else its `fields`."""
        return self.answer if self.answer is not None else self.fields


@dataclass(frozen=True)
class Dataset:
    name: str
    split: str
    examples: list[Example]
    labels: list[str]  # sorted label set over all splits; for "extract", the sorted field names
    kind: Kind
    language: str  # "en" | "zh"
    oos_label: str | None = None
    note: str = ""

    def __len__(self) -> int:
        return len(self.examples)


# ---------------------------------------------------------------- where the data lives


def datasets_root() -> Path:
    """`$WORKHORSE_DATASETS` if set; else `../shared/datasets` from the working directory, else from the repository."""
    env = os.environ.get(ROOT_ENV)
    if env:
        candidates = [Path(env)]
    else:
        candidates = [Path.cwd() / ".." / "shared" / "datasets", _REPO_ROOT / ".." / "shared" / "datasets"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"no datasets folder found (tried {tried})",
        hint=f"set {ROOT_ENV} to the folder that holds banking77/, clinc150/, … (see its README.md)",
    )


def _path(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"dataset file missing: {path}",
            hint=f"{ROOT_ENV} (or ../shared/datasets) must point at a complete copy of the shared datasets",
        )
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the public datasets


def _banking77(root: Path, name: str, split: str, seed: int) -> Dataset:
    rows = {s: _read_csv(_path(root, "banking77", f"{s}.csv")) for s in ("train", "test")}
    labels = sorted({r["category"] for part in rows.values() for r in part})
    examples = [Example(r["text"], label=r["category"], id=f"banking77:{split}:{i}") for i, r in enumerate(rows[split])]
    return Dataset(name, split, examples, labels, "classify", "en")


def _clinc150(root: Path, name: str, split: str, seed: int) -> Dataset:
    data = _read_json(_path(root, "clinc150", "data_full.json"))
    intents = sorted({intent for part in ("train", "val", "test") for _, intent in data[part]})
    base = split.removesuffix("_inscope")
    examples = [Example(text, label=intent, id=f"clinc150:{base}:{i}") for i, (text, intent) in enumerate(data[base])]
    if split != base:
        return Dataset(name, split, examples, intents, "classify", "en", note=f"the {base} split without its oos rows")
    oos = data[f"oos_{base}"]
    examples += [Example(text, label=OOS, id=f"clinc150:oos_{base}:{i}") for i, (text, _) in enumerate(oos)]
    note = f"{base} plus oos_{base}, labelled {OOS!r}"
    return Dataset(name, split, examples, sorted([*intents, OOS]), "classify", "en", oos_label=OOS, note=note)


_BITEXT_FILES = {"train": "Training", "validation": "Validation", "test": "Testing"}


def _bitext(root: Path, name: str, split: str, seed: int) -> Dataset:
    rows = {
        s: _read_csv(_path(root, "bitext_cs", f"Bitext_Sample_Customer_Service_{f}_Dataset.csv"))
        for s, f in _BITEXT_FILES.items()
    }
    if name == "bitext_cs":
        labels = sorted({r["intent"] for part in rows.values() for r in part})
        examples = [
            Example(r["utterance"], label=r["intent"], id=f"bitext_cs:{split}:{i}") for i, r in enumerate(rows[split])
        ]
        return Dataset(name, split, examples, labels, "classify", "en")
    types = sorted({r["entity_type"] for part in rows.values() for r in part if r["entity_type"]})
    examples = [
        Example(r["utterance"], fields={r["entity_type"]: r["entity_value"]}, id=f"bitext_cs:{split}:{i}")
        for i, r in enumerate(rows[split])
        if r["entity_type"]
    ]
    # The source's entity_value is capitalised ("Platinum") where the text is not ("platinum").
    note = "rows with an entity only; values as the source gives them (case may differ from the text)"
    return Dataset(name, split, examples, types, "extract", "en", note=note)


_NLUPP_FOLDS = {"train": range(0, 10), "test": range(10, 20)}


def _slot_value(slot: dict[str, Any]) -> Any:
    if "value" in slot:
        return slot["value"]
    if "values" in slot:  # date ranges carry a structured "values"
        return slot["values"]
    return slot["text"]


def _nlupp(root: Path, name: str, split: str, seed: int) -> Dataset:
    domain = name.removeprefix("nlupp_").removesuffix("_slots")
    folds = {k: _read_json(_path(root, "nlupp", "data", domain, f"fold{k}.json")) for k in range(20)}
    rows = [(k, i, r) for k in _NLUPP_FOLDS[split] for i, r in enumerate(folds[k])]
    note = "NLU++ has 20 folds and no official split: train = folds 0-9, test = folds 10-19"
    if not name.endswith("_slots"):
        labels = sorted({intent for part in folds.values() for r in part for intent in r.get("intents", [])})
        examples = [
            Example(
                r["text"],
                labels=tuple(r.get("intents", [])),
                fields={s: _slot_value(v) for s, v in r["slots"].items()} if r.get("slots") else None,
                id=f"nlupp_{domain}:fold{k}:{i}",
            )
            for k, i, r in rows
        ]
        note += "; rows without intents kept (labels=())"
        return Dataset(name, split, examples, labels, "multilabel", "en", note=note)
    slot_names = sorted({s for part in folds.values() for r in part for s in r.get("slots", {})})
    examples = [
        Example(r["text"], fields={s: _slot_value(v) for s, v in r["slots"].items()}, id=f"nlupp_{domain}:fold{k}:{i}")
        for k, i, r in rows
        if r.get("slots")
    ]
    note += "; rows with at least one slot; values are the normalised ones (span text where none)"
    return Dataset(name, split, examples, slot_names, "extract", "en", note=note)


def _stratified_split(strata: list[Any], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per stratum, a seeded shuffle puts round(n * test_fraction) rows into test; both sides keep file order."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(strata):
        groups[key].append(i)
    rng = random.Random(seed)
    test: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        test += members[: int(len(members) * test_fraction + 0.5)]
    test_set = set(test)
    return [i for i in range(len(strata)) if i not in test_set], sorted(test)


def _smp2019(root: Path, name: str, split: str, seed: int) -> Dataset:
    rows = _read_json(_path(root, "smp2019", "2019train.json"))
    train, test = _stratified_split([(r["domain"], r["intent"]) for r in rows], 0.2, seed)
    target = "domain" if name == "smp2019_domain" else "intent"
    labels = sorted({r[target] for r in rows})
    chosen = train if split == "train" else test
    examples = [Example(rows[i]["text"], label=rows[i][target], id=f"smp2019:{i}") for i in chosen]
    note = (
        f"label = {target}; SMP2019 has no official test split: seeded (seed={seed}) 80/20 split of 2019train.json, "
        "stratified by (domain, intent); ids are row indices in that file"
    )
    return Dataset(name, split, examples, labels, "classify", "zh", note=note)


def _cluener(root: Path, name: str, split: str, seed: int) -> Dataset:
    def rows(path: Path) -> Iterator[dict[str, Any]]:
        with path.open(encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())

    def fields(label: dict[str, dict[str, list[list[int]]]]) -> dict[str, list[str]]:
        # Entities of a type in order of first appearance in the text.
        return {t: sorted(spans, key=lambda e: min(s for s, _ in spans[e])) for t, spans in label.items()}

    files = {"train": "train.json", "test": "dev_labeled_as_test.json"}
    parsed = {s: list(rows(_path(root, "cluener2020", f))) for s, f in files.items()}
    types = sorted({t for part in parsed.values() for r in part for t in r.get("label", {})})
    examples = [
        Example(r["text"], fields=fields(r.get("label", {})), id=f"cluener2020:{split}:{i}")
        for i, r in enumerate(parsed[split])
    ]
    note = "test = dev_labeled_as_test.json (the public dev set; CLUENER's own test labels are not public)"
    return Dataset(name, split, examples, types, "extract", "zh", note=note if split == "test" else "")


QUERIES_PER_EVENT = 10  # at most this many queries per log event, so that a few chatty events do not decide the score


def _loghub_events(root: Path, name: str, split: str, seed: int) -> Dataset:
    """A retrieval set from Loghub-2k: find the logged event a line belongs to among one line of each event.

    Over all systems, an event is a (system, EventTemplate) pair; its lines say the same thing
    with other values (a block id, a user, an address). `corpus`: each event's first line in the
    file. `queries`: for each event, its other lines whose Content (spaces collapsed) differs from
    the corpus line's and from each other's, at most QUERIES_PER_EVENT of them drawn by a seeded
    shuffle, then in file order. Texts are the lines' Content (the message without its header: the
    header's time and pid would only add noise); a row's label names its event, so the one relevant
    corpus row of a query is the one with its label.
    """
    from workhorse.evals.loghub import load_system, systems

    folder = root / "loghub_2k"
    rng = random.Random(seed)
    corpus: list[Example] = []
    queries: list[Example] = []
    for system in systems(folder):
        log = load_system(folder, system)
        events: dict[str, list[int]] = defaultdict(list)
        for i, template in enumerate(log.truth_templates):
            events[template].append(i)
        for template, lines in events.items():
            label = f"{system}: {template}"
            first = lines[0]
            corpus.append(Example(log.contents[first], label=label, id=f"{name}:{system}:{first + 1}"))
            seen = {" ".join(log.contents[first].split())}
            distinct = []
            for i in lines[1:]:
                key = " ".join(log.contents[i].split())
                if key not in seen:
                    seen.add(key)
                    distinct.append(i)
            rng.shuffle(distinct)
            queries += [Example(log.contents[i], label=label, id=f"{name}:{system}:{i + 1}")
                        for i in sorted(distinct[:QUERIES_PER_EVENT])]
    labels = sorted(e.label for e in corpus if e.label is not None)
    note = (f"Loghub-2k, all systems; an event = (system, EventTemplate); corpus = each event's first line; queries = up to "
            f"{QUERIES_PER_EVENT} other lines per event with distinct Content (seed={seed}); texts = the Content column")
    return Dataset(name, split, corpus if split == "corpus" else queries, labels, "classify", "en", note=note)


Loader = Callable[[Path, str, str, int], Dataset]

_CATALOGUE: dict[str, tuple[tuple[str, ...], Loader]] = {
    "banking77": (("train", "test"), _banking77),
    "clinc150": (("train", "val", "test", "train_inscope", "val_inscope", "test_inscope"), _clinc150),
    "bitext_cs": (("train", "validation", "test"), _bitext),
    "bitext_cs_entities": (("train", "validation", "test"), _bitext),
    "nlupp_banking": (("train", "test"), _nlupp),
    "nlupp_hotels": (("train", "test"), _nlupp),
    "nlupp_banking_slots": (("train", "test"), _nlupp),
    "nlupp_hotels_slots": (("train", "test"), _nlupp),
    "smp2019": (("train", "test"), _smp2019),
    "smp2019_domain": (("train", "test"), _smp2019),
    "cluener2020": (("train", "test"), _cluener),
    "loghub_events": (("queries", "corpus"), _loghub_events),
}

# The split whose rows an embedding is searched against, where it is not the dataset's `train`.
_INDEX_SPLITS = {
    ("clinc150", "val_inscope"): "train_inscope",
    ("clinc150", "test_inscope"): "train_inscope",
    ("loghub_events", "queries"): "corpus",
}


def default_index(spec: str) -> str:
    """The dataset spec whose rows the items of `spec` are matched against when embeddings are
    evaluated: the same dataset's training split (or the corpus of a retrieval set)."""
    name, _, split = spec.partition(":")
    if Path(spec).is_file() or name not in _CATALOGUE:
        raise DatasetNotFoundError(f"no index to search is known for {spec!r}",
                                   hint="give --index: a labelled file or dataset spec whose rows the items are matched against")
    return f"{name}:{_INDEX_SPLITS.get((name, split), 'train')}"


def available() -> dict[str, list[str]]:
    """Every dataset `load` knows, with its splits (whether or not the datasets folder is present)."""
    return {name: list(splits) for name, (splits, _) in _CATALOGUE.items()}


def load(spec: str, *, limit: int | None = None, seed: int = 0) -> Dataset:
    """Load `name:split` (see `available()`), or a JSONL/CSV file if `spec` is a path to one.

    `seed` drives every random choice: SMP2019's split and the `limit` sample. `limit` keeps a
    stratified sample of that many examples: a seeded shuffle, then examples taken in turn across
    labels in proportion to their frequency (so the sample's order interleaves the labels).
    """
    if Path(spec).is_file():
        dataset = load_file(spec)
    else:
        name, _, split = spec.partition(":")
        if name not in _CATALOGUE:
            if "/" in spec or os.sep in spec or Path(spec).suffix:
                raise DatasetNotFoundError(f"no such file: {spec}", hint="give an existing .jsonl or .csv file")
            raise DatasetNotFoundError(
                f"unknown dataset {name!r}",
                hint=f"known datasets: {', '.join(_CATALOGUE)}; or give the path of a .jsonl or .csv file",
            )
        splits, loader = _CATALOGUE[name]
        if split not in splits:
            what = f"no split {split!r}" if split else "no split given"
            raise DatasetNotFoundError(f"{name}: {what}", hint="use one of " + ", ".join(f"{name}:{s}" for s in splits))
        dataset = loader(datasets_root(), name, split, seed)
    return sample(dataset, limit, seed=seed) if limit is not None else dataset


def _stratum(example: Example) -> Any:
    if example.label is not None:
        return example.label
    if example.labels:
        return tuple(sorted(example.labels))
    return tuple(sorted(example.fields or {}))


def sample(dataset: Dataset, limit: int, *, seed: int = 0) -> Dataset:
    """A deterministic sample of `limit` examples, proportional per label (systematic stratified sampling)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if limit >= len(dataset.examples):
        return dataset
    order = list(range(len(dataset.examples)))
    random.Random(seed).shuffle(order)
    sizes = Counter(_stratum(e) for e in dataset.examples)
    seen: Counter[Any] = Counter()
    keys: list[tuple[float, int, int]] = []
    for position, i in enumerate(order):
        stratum = _stratum(dataset.examples[i])
        keys.append(((seen[stratum] + 0.5) / sizes[stratum], position, i))
        seen[stratum] += 1
    chosen = [dataset.examples[i] for _, _, i in sorted(keys)[:limit]]
    note = f"{dataset.note}; " if dataset.note else ""
    note += f"stratified sample of {limit} of {len(dataset.examples)} (seed={seed})"
    return replace(dataset, examples=chosen, note=note)


# ---------------------------------------------------------------- users' files

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _guess_language(texts: list[str]) -> str:
    """"zh" when CJK characters make up over 30 % of the first 200 texts' non-space characters; else "en"."""
    chars = "".join(texts[:200]).replace(" ", "")
    return "zh" if chars and len(_CJK.findall(chars)) / len(chars) > 0.3 else "en"


def load_file(path: str | Path) -> Dataset:
    """A user's data file: JSONL (`.jsonl`, `.ndjson`, `.json` one object per line) or CSV/TSV with a header.

    JSONL rows: `{"text": …, "label": …}`, `"labels": [...]`, `"fields": {...}` or `"answer": …`, optional `"id"`.
    CSV: a `text` column; the label is the first of `label`, `intent`, `category` present; optional `id`.
    The kind follows the targets present: `labels` → multilabel, `label` → classify, only `fields` or
    `answer` → extract (extract and convert tasks alike); a file with no targets loads as unlabelled classify data. Ids default to `file:line`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no such file: {path}", hint="give an existing .jsonl or .csv file")
    fmt = guess_format(path.name)
    if fmt == "text":
        raise DatasetFormatError(f"{path}: unknown file type {path.suffix!r}", hint="use .jsonl or .csv")
    examples, lines, bad = [], [], []
    with open_rows(str(path)) as stream:
        for row in read_rows(stream, fmt=fmt):
            if isinstance(row, BadRow):
                bad.append(row)
                continue
            row_id = row.id if row.id is not None else f"{path.name}:{row.line}"
            examples.append(Example(row.text, label=row.label, labels=row.labels, fields=row.fields, id=row_id, answer=row.answer))
            lines.append(row.line)
    if bad:
        shown = "\n  ".join(f"{path}:{b.line}: {b.problem}" for b in bad[:BAD_ROWS_SHOWN])
        more = f"\n  … and {len(bad) - BAD_ROWS_SHOWN} more" if len(bad) > BAD_ROWS_SHOWN else ""
        raise DatasetFormatError(f"{len(bad)} bad row{'s' * (len(bad) > 1)} in {path}:\n  {shown}{more}",
                                 hint=JSONL_HINT if fmt == "jsonl" else CSV_HINT)
    if not examples:
        raise DatasetFormatError(f"{path}: no rows", hint="the file needs at least one row with a text")

    multilabel = [line for e, line in zip(examples, lines, strict=True) if e.labels]
    single = [line for e, line in zip(examples, lines, strict=True) if e.label is not None]
    if multilabel and single:
        raise DatasetFormatError(f"{path}:{max(multilabel[0], single[0])}: rows mix \"label\" and \"labels\"",
                                 hint="use one of them throughout")
    kind: Kind
    if multilabel:
        kind, labels = "multilabel", sorted({x for e in examples for x in e.labels})
    elif single or not any(e.fields or e.answer is not None for e in examples):
        kind, labels = "classify", sorted({e.label for e in examples if e.label is not None})
    else:
        kind, labels = "extract", sorted({k for e in examples for k in e.fields or {}})
    language = _guess_language([e.text for e in examples])
    return Dataset(path.stem, "file", examples, labels, kind, language, note=f"loaded from {path}")
