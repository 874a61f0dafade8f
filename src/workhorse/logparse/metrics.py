"""Log-parsing accuracy: GA, PA, FGA and FTA, as used by the Loghub-2.0 evaluation.

A parser assigns every log line a group id and a template (e.g. ``Invalid user <*> from <*>``).
The ground truth gives every line a template; lines that share a true template form one true
group. Template strings are compared after collapsing whitespace runs to one space and stripping,
so that a parser is not penalised for how it re-joins tokens. Definitions (Jiang et al., "A
Large-scale Evaluation for Log Parsing Techniques: How Far are We?", ISSTA 2024; GA and PA as in
Zhu et al., ICSE-SEIP 2019 and Khan et al., ICSE 2022):

- GA, grouping accuracy: the share of lines whose predicted group (all lines with the same
  predicted group id) is exactly the set of lines that share that line's true template.
- PA, parsing accuracy: the share of lines whose predicted template equals the true template.
- FGA, F1 of grouping accuracy: a predicted group is correct when its line set equals some true
  group's line set; precision = correct groups / predicted groups, recall = correct groups / true
  groups.
- FTA, F1 of template accuracy: a predicted template is correct when its group is correct (as for
  FGA) and its template string equals that group's true template; precision and recall as for
  FGA, over the number of predicted and true templates.

Each predicted group stands for one predicted template, so ``n_predicted_templates`` is the number
of predicted groups. If the lines of one predicted group carry different template strings, the
group has no single template and never counts as a correct template.

GA and PA are line-weighted, so frequent events dominate them; FGA and FTA count each template
once, so rare events weigh as much as frequent ones. Reporting both is why Loghub-2.0 added them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence


def normalize_template(template: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped: the form templates are compared in."""
    return " ".join(template.split())


def _f1(correct: int, n_predicted: int, n_true: int) -> float:
    precision = correct / n_predicted if n_predicted else 0.0
    recall = correct / n_true if n_true else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def parsing_metrics(
    truth_templates: Sequence[str],
    predicted_groups: Sequence[Hashable],
    predicted_templates: Sequence[str],
) -> dict[str, float | int]:
    """GA, PA, FGA and FTA of one parse (see the module docstring), plus the counts behind them.

    All three sequences hold one entry per log line, in the same order. Returns ``ga``, ``pa``,
    ``fga``, ``fta`` (floats in [0, 1]) and ``n_lines``, ``n_true_templates``,
    ``n_predicted_templates`` (ints).
    """
    n = len(truth_templates)
    if len(predicted_groups) != n or len(predicted_templates) != n:
        raise ValueError(
            f"parsing_metrics: {n} true templates but {len(predicted_groups)} predicted groups "
            f"and {len(predicted_templates)} predicted templates; give one of each per log line"
        )
    if n == 0:
        # Every score would be 0/0; an empty evaluation is a caller's mistake, not a score of 0.
        raise ValueError("parsing_metrics: no log lines to evaluate")

    truth = [normalize_template(t) for t in truth_templates]
    predicted = [normalize_template(t) for t in predicted_templates]

    true_groups: dict[str, set[int]] = defaultdict(set)
    for i, template in enumerate(truth):
        true_groups[template].add(i)
    groups: dict[Hashable, set[int]] = defaultdict(set)
    for i, group in enumerate(predicted_groups):
        groups[group].add(i)

    lines_in_correct_groups = 0
    correct_groups = 0
    correct_templates = 0
    for members in groups.values():
        # Correct only if the whole true group of one member is exactly this group; checking one
        # member suffices, since any other member with a different true template breaks equality.
        true_template = truth[next(iter(members))]
        if true_groups[true_template] != members:
            continue
        correct_groups += 1
        lines_in_correct_groups += len(members)
        if all(predicted[i] == true_template for i in members):
            correct_templates += 1

    n_true = len(true_groups)
    n_predicted = len(groups)
    return {
        "ga": lines_in_correct_groups / n,
        "pa": sum(p == t for p, t in zip(predicted, truth)) / n,
        "fga": _f1(correct_groups, n_predicted, n_true),
        "fta": _f1(correct_templates, n_predicted, n_true),
        "n_lines": n,
        "n_true_templates": n_true,
        "n_predicted_templates": n_predicted,
    }
