"""`workhorse eval EMBED_TASK DATA`: how well an embed task's vectors find rows of the same label.

The rows of DATA are the queries. Each is matched by cosine against the rows of an index (`--index`;
by default the same dataset's training split, or a retrieval set's corpus: see
`evals.datasets.default_index`). Reported: the label accuracy of the nearest index row and of a
5-row vote, and recall@10 with the index rows of the query's own label as the relevant ones
(`evals.metrics.neighbour_report`). Multi-label rows (NLU++) count their whole set of labels as one
label, so a neighbour is right only with exactly the same set.
"""

from __future__ import annotations

import json
import time

import numpy as np
import typer

from workhorse.evals.datasets import Dataset, Example

BATCH = 64  # items per engine call, as the classify eval
NO_LABELS = "<none>"  # the label of a multi-label row without any


def eval_embed(spec, directory, data: str, *, index: str | None, limit: int | None, threads: int, as_json: bool) -> None:
    from workhorse.errors import WorkhorseError
    from workhorse.evals.datasets import default_index, load
    from workhorse.evals.metrics import RETRIEVAL_K, neighbour_report
    from workhorse.pipeline import build_pipeline
    from workhorse.tasks.engines import open_task_engine

    index_spec = index or default_index(data)
    if index_spec == data:
        raise WorkhorseError(f"the queries and the index are both {data}: each row would find itself",
                             "evaluate another split (e.g. NAME:test), or give --index")
    queries = load(data, limit=limit)  # --limit samples the queries only: a smaller index would change the task
    corpus = load(index_spec)
    query_labels, index_labels = _labels(queries, data), _labels(corpus, index_spec)
    if len(corpus) < RETRIEVAL_K:
        from workhorse.errors import DatasetFormatError

        raise DatasetFormatError(f"the index {index_spec} has {len(corpus)} rows; recall@{RETRIEVAL_K} needs at least {RETRIEVAL_K}",
                                 hint="give --index a larger labelled file or dataset")
    engine = open_task_engine(spec, directory, threads=threads)
    pipeline = build_pipeline(spec, directory, engine, escalate=False)
    index_vectors, index_s = _embed(pipeline, corpus, f"{spec.name}: index {index_spec}")
    query_vectors, query_s = _embed(pipeline, queries, f"{spec.name}: queries {data}")
    started = time.perf_counter()
    report = neighbour_report(query_vectors, query_labels, index_vectors, index_labels)
    search_s = time.perf_counter() - started
    report |= {
        "relevant": "index rows with the query's label",
        "dimensions": int(query_vectors.shape[1]),
        "items_per_s": (len(corpus) + len(queries)) / (index_s + query_s),
        "seconds": {"embed_index": index_s, "embed_queries": query_s, "search": search_s},
        "task": {"name": spec.name, "version": spec.version, "kind": spec.kind, "model": spec.model,
                 "pooling": spec.embed.pooling, "normalize": spec.embed.normalize, "dimensions": spec.embed.dimensions},
        "data": {"spec": data, "rows": len(queries), "note": queries.note,
                 "index": {"spec": index_spec, "rows": len(corpus), "note": corpus.note}},
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False, default=float))
        return
    _print(report)


def _labels(dataset: Dataset, spec: str) -> list[str]:
    from workhorse.errors import DatasetFormatError

    if dataset.kind not in ("classify", "multilabel"):
        raise DatasetFormatError(f"{spec} has no labels ({dataset.kind} data)",
                                 hint="evaluate embeddings on labelled rows: a classify dataset or a file with \"label\"")
    return [_label(example) for example in dataset.examples]


def _label(example: Example) -> str:
    if example.label is not None:
        return example.label
    return "+".join(sorted(example.labels)) or NO_LABELS


def _embed(pipeline, dataset: Dataset, label: str) -> tuple[np.ndarray, float]:
    """The rows' vectors (float32, kept batch by batch so that no list of Python floats builds up)
    and the seconds it took."""
    from workhorse.cli.progress import in_batches

    def run(texts: list[str]) -> list[np.ndarray]:
        return [np.asarray([answer.answer for answer in pipeline.run(texts)], dtype=np.float32)]

    started = time.perf_counter()
    batches = in_batches(run, [example.text for example in dataset.examples], batch=BATCH, label=label)
    return np.concatenate(batches), time.perf_counter() - started


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    task, retrieval = report["task"], report["retrieval"]
    k = retrieval["k"]
    title = f"{task['name']} v{task['version']} (embed, {task['pooling']} pooling, {task['model']}) on {report['data']['spec']}"
    table = Table(title=title, show_header=False)
    rows = [
        ("queries", f"{report['n']:,} ({report['data']['spec']})"),
        ("index rows", f"{report['index_rows']:,} ({report['data']['index']['spec']})"),
        ("nearest-neighbour accuracy (k=1)", f"{100 * report['knn_accuracy']['1']:.2f} %"),
        ("5-neighbour vote accuracy (k=5)", f"{100 * report['knn_accuracy']['5']:.2f} %"),
        (f"recall@{k} (relevant: same label)", f"{100 * retrieval['recall_at_k']:.2f} %"),
        (f"hit@{k}", f"{100 * retrieval['hit_at_k']:.2f} %"),
        (f"MRR@{k}", f"{retrieval['mrr_at_k']:.3f}"),
        ("relevant index rows per query (mean)", f"{retrieval['mean_relevant']:,.1f}"),
    ]
    if retrieval["queries_without_relevant"]:
        rows.append(("queries without a relevant row (not scored)", f"{retrieval['queries_without_relevant']:,}"))
    seconds = report["seconds"]
    rows += [
        ("dimensions", report["dimensions"]),
        ("items/s (batched, index and queries)", f"{report['items_per_s']:.1f}"),
        ("seconds: embed index / queries / search", f"{seconds['embed_index']:.1f} / {seconds['embed_queries']:.1f} / "
                                                    f"{seconds['search']:.2f}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    console.print(f"k=5 vote: {report['knn_tie_break']}. recall@{k} = relevant rows in the top {k} ÷ min({k}, relevant rows), "
                  "averaged over queries.", highlight=False)
