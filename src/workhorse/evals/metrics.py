"""Evaluation metrics; each report is a plain dict that `json.dumps` accepts.

Conventions: a precision, recall or F1 whose denominator is zero is 0.0 inside per-label tables (as
scikit-learn's `zero_division=0`, so that averages stay defined), while a headline rate whose
denominator is zero (say `oos_recall` on data without out-of-scope rows) is None: there was nothing
to measure.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

NO_PREDICTION = "<none>"  # how a None prediction (the model gave no usable label) is counted and reported
SELECTIVE_COVERAGES = (0.5, 0.8, 0.9, 1.0)
ECE_BINS = 15


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _same_length(name: str, a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name}: {len(a)} gold items but {len(b)} predictions")


def classification_report(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    confidences: Sequence[float] | None = None,
    *,
    labels: Sequence[str] | None = None,
    oos_label: str | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label scores and the commonest confusions; OOS and calibration figures on request.

    `labels`: the labels macro-F1 averages over and `per_label` lists (labels nobody used get zeros);
    by default the labels present in `y_true` or `y_pred`. A None prediction counts as the label
    `NO_PREDICTION`. With `confidences`, `selective_accuracy[c]` is the accuracy on the fraction `c` of
    rows with the highest confidence (ceil(c·n) rows; ties keep input order), and `ece` is the expected
    calibration error over 15 equal-width bins: Σ_bins |accuracy − mean confidence| · (rows in bin / n).
    """
    _same_length("classification_report", y_true, y_pred)
    if not y_true:
        raise ValueError("classification_report: no rows")
    true = [str(t) for t in y_true]
    pred = [NO_PREDICTION if p is None else str(p) for p in y_pred]
    n = len(true)
    correct = np.array([t == p for t, p in zip(true, pred, strict=True)])
    label_set = list(labels) if labels is not None else sorted(set(true) | set(pred))

    hits = Counter(t for t, p in zip(true, pred, strict=True) if t == p)
    per_label = _scores_per_key(label_set, hits, Counter(pred), Counter(true))

    confusions = Counter((t, p) for t, p in zip(true, pred, strict=True) if t != p)
    top = sorted(confusions.items(), key=lambda item: (-item[1], item[0]))[:10]
    report: dict[str, Any] = {
        "n": n,
        "accuracy": float(correct.mean()),
        "macro_f1": _macro_f1(per_label),
        "per_label": per_label,
        "top_confusions": [{"true": t, "pred": p, "count": c} for (t, p), c in top],
        "most_over_answered": _most_over_answered(Counter(true), Counter(pred)),
    }

    if oos_label is not None:
        is_oos = np.array([t == oos_label for t in true])
        said_oos = np.array([p == oos_label for p in pred])
        report["in_scope_accuracy"] = _ratio(correct[~is_oos].sum(), (~is_oos).sum())
        report["oos_recall"] = _ratio((is_oos & said_oos).sum(), is_oos.sum())
        report["oos_precision"] = _ratio((is_oos & said_oos).sum(), said_oos.sum())

    if confidences is not None:
        _same_length("classification_report confidences", y_true, confidences)
        conf = np.asarray(confidences, dtype=np.float64)
        if not np.all((conf >= 0) & (conf <= 1)):
            raise ValueError("confidences must lie in [0, 1]")
        order = np.argsort(-conf, kind="stable")
        report["selective_accuracy"] = {
            str(c): float(correct[order[: max(1, math.ceil(c * n - 1e-9))]].mean()) for c in SELECTIVE_COVERAGES
        }
        report["ece"] = expected_calibration_error(correct, conf)
    return report


def _most_over_answered(n_true: Counter, n_pred: Counter) -> dict[str, Any]:
    """The true label answered most often relative to its share of the rows: a classifier leaning
    on one label shows here first (ratio 1 for a classifier that answers in the true proportions)."""
    label = max(sorted(n_true), key=lambda key: n_pred[key] / n_true[key])
    return {"label": label, "ratio": n_pred[label] / n_true[label], "answered": n_pred[label], "support": n_true[label]}


def _scores_per_key(keys: Iterable[str], tp: Counter, n_pred: Counter, n_true: Counter) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for each key (label or entity type) from its counts."""
    scores = {}
    for key in keys:
        precision, recall, f1 = _prf(tp[key], n_pred[key], n_true[key])
        scores[key] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true[key]}
    return scores


def _macro_f1(scores: dict[str, dict[str, float]]) -> float:
    return float(np.mean([s["f1"] for s in scores.values()])) if scores else 0.0


def expected_calibration_error(
    correct: Sequence[bool] | np.ndarray, confidences: Sequence[float] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """Σ over equal-width bins of |accuracy − mean confidence| × fraction of rows in the bin.

    Bin k holds confidences in (k/bins, (k+1)/bins]; a confidence of exactly 0 joins the first bin.
    """
    hit = np.asarray(correct, dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for k in np.unique(index):
        in_bin = index == k
        ece += abs(hit[in_bin].mean() - conf[in_bin].mean()) * in_bin.mean()
    return float(ece)


def multilabel_report(true_sets: Sequence[Iterable[str]], pred_sets: Sequence[Iterable[str] | None]) -> dict[str, Any]:
    """Micro and macro precision/recall/F1 over (item, label) decisions, and exact-set accuracy.

    Macro-F1 averages over labels present in either side; a None prediction is the empty set.
    """
    _same_length("multilabel_report", true_sets, pred_sets)
    if not true_sets:
        raise ValueError("multilabel_report: no rows")
    true = [set(t) for t in true_sets]
    pred = [set(p or ()) for p in pred_sets]
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    for t, p in zip(true, pred, strict=True):
        tp.update(t & p)
        n_pred.update(p)
        n_true.update(t)
    micro_p, micro_r, micro_f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    per_label = _scores_per_key(sorted(set(n_true) | set(n_pred)), tp, n_pred, n_true)
    return {
        "n": len(true),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "macro_f1": _macro_f1(per_label),
        "exact_match": float(np.mean([t == p for t, p in zip(true, pred, strict=True)])),
        "per_label": per_label,
    }


_SPACES = re.compile(r"\s+")


def _canonical(value: Any) -> Any:
    """A hashable form in which equal-after-normalisation values are equal: strings trimmed, spaces
    collapsed and case-folded; lists compared as multisets; objects field by field."""
    if isinstance(value, str):
        return _SPACES.sub(" ", value).strip().casefold()
    if isinstance(value, bool):
        return ("bool", value)  # True must not equal 1
    if isinstance(value, list | tuple):
        return ("list", tuple(sorted((_canonical(v) for v in value), key=repr)))
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    return value


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def extraction_report(
    gold: Sequence[Mapping[str, Any]],
    pred: Sequence[Mapping[str, Any] | None],
    *,
    schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How often the output was valid JSON (an object, valid against `schema` if given), and how many fields were right.

    `field_exact_match`: the fraction of all gold fields whose predicted value equals the gold one
    after normalisation (see `_canonical`); a missing field or a prediction that is not an object
    counts as wrong. Field matching does not depend on schema validity: the two are reported apart.
    `all_fields_exact`: the fraction of items whose gold fields are all exact and that predict no
    extra field with a non-empty value. `spurious_fields`: how many such extra fields there were.
    """
    _same_length("extraction_report", gold, pred)
    if not gold:
        raise ValueError("extraction_report: no rows")
    validator = None
    if schema is not None:
        from jsonschema.validators import validator_for  # imported here: keeps `workhorse --help` fast

        cls = validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)

    valid = 0
    matched, total, all_exact, spurious = 0, 0, 0, 0
    field_hits: Counter[str] = Counter()
    field_support: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        is_object = isinstance(p, Mapping)
        valid += is_object and (validator is None or validator.is_valid(p))
        p = p if isinstance(p, Mapping) else {}
        item_ok = True
        for field, value in g.items():
            hit = field in p and _canonical(p[field]) == _canonical(value)
            field_support[field] += 1
            field_hits[field] += hit
            matched += hit
            item_ok &= hit
        extra = sum(1 for field, value in p.items() if field not in g and not _empty(value))
        spurious += extra
        all_exact += item_ok and not extra
        total += len(g)
    return {
        "n": len(gold),
        "json_valid_rate": valid / len(gold),
        "field_exact_match": _ratio(matched, total),
        "all_fields_exact": all_exact / len(gold),
        "spurious_fields": spurious,
        "per_field": {
            f: {"exact": field_hits[f] / field_support[f], "support": field_support[f]} for f in sorted(field_support)
        },
    }


def _entity_pairs(item: Mapping[str, Any] | None) -> Counter[tuple[str, str]]:
    pairs: Counter[tuple[str, str]] = Counter()
    if not isinstance(item, Mapping):
        return pairs
    for entity_type, values in item.items():
        for value in [values] if isinstance(values, str) else values or ():
            pairs[(str(entity_type), str(value).strip())] += 1
    return pairs


def entity_f1(
    gold: Sequence[Mapping[str, Sequence[str]]], pred: Sequence[Mapping[str, Sequence[str] | str] | None]
) -> dict[str, Any]:
    """Micro precision/recall/F1 over (entity type, entity string) pairs, matched within each item, plus per type.

    Strings are compared exactly after trimming; a prediction that is not an object predicts nothing.
    """
    _same_length("entity_f1", gold, pred)
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred, strict=True):
        gold_pairs, pred_pairs = _entity_pairs(g), _entity_pairs(p)
        for (entity_type, _), count in (gold_pairs & pred_pairs).items():
            tp[entity_type] += count
        for (entity_type, _), count in pred_pairs.items():
            n_pred[entity_type] += count
        for (entity_type, _), count in gold_pairs.items():
            n_true[entity_type] += count
    precision, recall, f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    per_type = _scores_per_key(sorted(set(n_true) | set(n_pred)), tp, n_pred, n_true)
    return {
        "n": len(gold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "gold_entities": sum(n_true.values()),
        "predicted_entities": sum(n_pred.values()),
        "per_type": per_type,
    }


def latency_summary(seconds: Sequence[float], wall_seconds: float | None = None) -> dict[str, Any]:
    """Per-item latency percentiles and mean in milliseconds; `items_per_s` = n / `wall_seconds` (None without it).

    Percentiles interpolate linearly between ranks (numpy's default).
    """
    if len(seconds) == 0:
        raise ValueError("latency_summary: no latencies")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": int(ms.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
        "items_per_s": float(ms.size / wall_seconds) if wall_seconds else None,
    }
