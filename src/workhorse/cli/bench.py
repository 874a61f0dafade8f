"""`workhorse bench …`: benchmarks measured on this machine, side by side with their anchors."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import typer

app = typer.Typer(help="Benchmarks, measured on this machine in one run.", no_args_is_help=True)


@app.command("engine")
def engine(
    models: list[str] = typer.Option(
        None, "--model", "-m", help="Model name, .gguf path or hf: reference (repeatable). Default: every offline built-in."
    ),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    repeats: int = typer.Option(3, min=1, help="Runs per figure; the median is shown with min–max."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Prompt and decoding speed, batched decoding, prefix reuse, memory and the physical floor."""
    from rich.console import Console
    from rich.progress import Progress

    from workhorse.bench.engine_bench import measure_gemm_gflops, run_in_child
    from workhorse.models import offline_models, resolve

    names = models or [n for n in offline_models() if _installed(n)]
    console = Console(stderr=True)
    gemm = measure_gemm_gflops()
    results: dict[str, dict] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(names))
        for name in names:
            progress.update(task, description=f"{name}: preparing")
            resolved = resolve(name)
            progress.update(task, description=f"{name}: measuring ({repeats} repeats)")
            results[resolved.name] = run_in_child(
                str(resolved.path), resolved.name, threads=threads, repeats=repeats, gemm_gflops=gemm
            )
            progress.advance(task)
    report = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "gemm_gflops": gemm,
        "models": results,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)


@app.command("classify")
def classify(
    data: str = typer.Option("bitext_cs:test", help="Labelled test data (dataset spec or file)."),
    task: str = typer.Option("bitext-intents", help="The workhorse task to measure; trained from --train if missing."),
    train: str = typer.Option("bitext_cs:train", help="Training data used when the task does not exist yet."),
    baseline_model: str = typer.Option("qwen2.5-coder-0.5b", help="Model of the chat baseline."),
    baseline_limit: int = typer.Option(200, help="Items the (slow) baselines classify."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """workhorse vs a chat prompt with the label list (generate, parse) on the same data, same run."""
    from rich.console import Console

    from workhorse.bench.classify_bench import chat_baseline, constrained_overhead, workhorse_side
    from workhorse.evals.datasets import load
    from workhorse.models import resolve

    console = Console(stderr=True)
    dataset = load(data)
    _ensure_trained(task, train, threads, console)
    console.print(f"workhorse: {task} on {data} ({len(dataset.examples)} items)")
    ours, extra = workhorse_side(task, dataset, threads=threads)
    baseline_path = resolve(baseline_model)
    console.print(f"baseline: chat prompt on {baseline_model} ({baseline_limit} items)")
    baseline = chat_baseline(str(baseline_path.path), baseline_path.name, dataset, threads=threads, limit=baseline_limit)
    if ours.model == baseline_path.name:
        same = baseline
    else:
        console.print(f"baseline: chat prompt on {ours.model} ({baseline_limit} items)")
        same = chat_baseline(extra["model_path"], ours.model, dataset, threads=threads, limit=baseline_limit)
    console.print("constrained decoding: JSON Schema vs plain, per token")
    overhead = constrained_overhead(baseline_path.name, threads=threads)
    report = {
        "data": data,
        "constrained_decoding": overhead,
        "workhorse": ours.as_dict() | extra,
        "baseline": baseline.as_dict(),
        "baseline_same_model": same.as_dict(),
        "speedup": ours.items_per_s / baseline.items_per_s,
        "speedup_same_model": ours.items_per_s / same.items_per_s,
        "fraction_of_floor": ours.items_per_s / extra["floor_items_per_s"],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table("side", "model", "accuracy", "invalid", "items/s", "p50 ms", title=f"bench classify on {data}")
    for side in (report["workhorse"], report["baseline"], report["baseline_same_model"]):
        table.add_row(side["name"], side["model"], f"{100 * side['accuracy']:.1f} %", f"{100 * side['invalid_rate']:.1f} %",
                      f"{side['items_per_s']:.1f}", f"{side['p50_ms']:.0f}")
    Console().print(table)
    typer.echo(f"speedup vs chat baseline: {report['speedup']:.1f}×; vs the same model: {report['speedup_same_model']:.1f}×; "
               f"{100 * report['fraction_of_floor']:.0f} % of the floor ({extra['floor_items_per_s']:.0f} items/s: "
               f"{extra['own_tokens_per_item']:.1f} own tokens per item at {extra['prompt_tps']:.0f} tok/s); "
               f"p50 latency {ours.p50_ms:.0f} ms = {extra['latency_over_forward_pass']:.2f}× one forward pass over the "
               f"ticket's own tokens ({extra['forward_pass_p50_ms']:.0f} ms)")
    typer.echo(f"constrained decoding on {overhead['model']}: {overhead['ms_per_token_constrained']:.1f} ms/token vs "
               f"{overhead['ms_per_token_plain']:.1f} plain ({100 * overhead['overhead']:+.1f} %)")


@app.command("serve")
def serve(
    data: str = typer.Option("bitext_cs:test", help="Labelled tickets for the classification load."),
    task: str = typer.Option("bitext-intents", help="The workhorse task to serve; trained from --train if missing."),
    train: str = typer.Option("bitext_cs:train", help="Training data used when the task does not exist yet."),
    baseline_model: str = typer.Option("qwen2.5-coder-0.5b", help="Chat model of the llama_cpp.server baseline."),
    embed_model: str = typer.Option("gemma3-270m", help="Embedding model (both sides)."),
    levels: str = typer.Option("1,2,4,8,16", help="Client concurrency levels for workhorse."),
    requests: int = typer.Option(64, help="Requests per level (scaled up by concurrency / 2)."),
    baseline_requests: int = typer.Option(48, help="Chat requests sent to the (slow) baseline."),
    half_load_seconds: float = typer.Option(20.0, help="Length of the open-loop run at half saturation."),
    encoder_model: str = typer.Option("minilm-l6", help="The English sentence encoder measured on its own (both sides, "
                                      "cache off, then a Zipf query stream with the cache on); none to skip it."),
    stream_data: str = typer.Option("banking77:test", help="The texts of the encoder's Zipf query stream."),
    threads: int = typer.Option(2, help="llama.cpp threads per server."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """workhorse serve vs llama_cpp.server over HTTP: ticket classification and embeddings, same run."""
    from rich.console import Console

    from workhorse.bench.encoder_bench import run_encoder
    from workhorse.bench.serve_bench import CLIENTS, run, short_texts
    from workhorse.evals.datasets import load

    console = Console(stderr=True)
    setup = _bench_setup(data, task, train, baseline_model, embed_model, threads, console)
    chosen_levels = tuple(int(x) for x in levels.split(","))
    stream = [ex.text for ex in load(stream_data).examples] if encoder_model != "none" else []
    report = run(setup, levels=chosen_levels, requests=requests, baseline_requests=baseline_requests,
                 half_load_seconds=half_load_seconds)
    if encoder_model != "none":
        report["embeddings_encoder"] = run_encoder(
            encoder_model, short_texts=short_texts(setup.data), stream_texts=stream, levels=chosen_levels, clients=CLIENTS,
            requests=requests, half_load_seconds=half_load_seconds, threads=threads, log=console.print)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_serve_table(report)


@app.command("soak")
def soak(
    minutes: float = typer.Option(10.0, help="How long to hold the overload."),
    overload: float = typer.Option(2.0, help="Offered load as a multiple of the measured saturation throughput."),
    rate: float = typer.Option(None, help="Offered requests/s instead (e.g. twice a saturation measured by bench serve)."),
    data: str = typer.Option("bitext_cs:test", help="Tickets for the load."),
    task: str = typer.Option("bitext-intents", help="The task served; trained from --train if missing."),
    train: str = typer.Option("bitext_cs:train", help="Training data used when the task does not exist yet."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """workhorse serve held at 2× its saturation: it must not crash, must not grow, and must answer or refuse every request."""
    from rich.console import Console

    from workhorse.bench.serve_bench import soak as run_soak

    console = Console(stderr=True)
    setup = _bench_setup(data, task, train, "qwen2.5-coder-0.5b", "gemma3-270m", threads, console)
    report = run_soak(setup, minutes=minutes, overload=overload, rate=rate)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    growth = report["rss_growth"]
    typer.echo(
        f"{report['sent']} requests at {report['offered_per_s']:.1f}/s over {minutes:g} min: statuses {report['statuses']}; "
        f"unanswered {report['unanswered']}; server alive: {report['server_alive_after']}; RSS "
        f"{report['rss_mb_after_warmup']:.0f} → {report['rss_mb_final']:.0f} MiB after warm-up"
        + (f" ({100 * growth:+.1f} %)" if growth is not None else "")
    )


@app.command("logs")
def logs(
    data: str = typer.Option(None, help="Directories laid out like Loghub-2k, comma-separated (default: loghub_2k in the datasets folder)."),
    systems: str = typer.Option(None, help="Comma-separated systems (default: every one in log_formats.json)."),
    model: str = typer.Option(None, help="The template model, with --ask-model (default: the log-templates task's, qwen2.5-coder-0.5b)."),
    ask_model: bool | None = typer.Option(
        None, "--ask-model/--no-model",
        help="Ask the template model about lines no other line of their block resembles, or leave them to the rules and "
        "the values their groups show (default: the log-templates task's log_ask_model, off)."),
    repeats: int = typer.Option(3, min=1, help="Warm passes per system (the median is reported)."),
    block: int = typer.Option(1000, min=1, help="Lines grouped at a time in the cold pass, as `logs parse` reads a file (1: line by line)."),
    first: int = typer.Option(10_000, min=1, help="Report the time to parse this many first lines of each system (or all it has)."),
    model_below: int = typer.Option(2, min=0, help="Ask the model only about groups of fewer different lines than this "
                                    "(larger ones: what held is a word, what varied a value); 0: about every group."),
    ports_apart: str = typer.Option(None, help="Systems (comma-separated) whose convention writes an address and its port "
                                    "as two values (`<*>:<*>`), as their deployment would set it (default: none)."),
    loso: bool = typer.Option(False, "--loso", help="Leave-one-system-out: each system scored with the evidence thresholds "
                              "chosen on the others (the rules alone, a grid of thresholds; see workhorse.bench.logs_loso)."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Log parsing per system from an empty cache: GA, PA, FGA, FTA, model calls, lines/s cold and warm, time to the first lines; drain3 beside it."""
    from rich.console import Console

    from workhorse.evals.datasets import datasets_root

    console = Console(stderr=True)
    roots = [Path(d.strip()) for d in data.split(",")] if data else [datasets_root() / "loghub_2k"]
    names = [n.strip() for n in systems.split(",")] if systems else None
    say = lambda line: console.print(line, highlight=False)  # noqa: E731
    if loso:
        from workhorse.bench.logs_loso import loso as run_loso

        report = run_loso(roots, names=names, block=block, log=say)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_loso_table(report)
        return
    from workhorse.bench.logs_bench import run as run_logs
    from workhorse.tasks.store import load_task

    template_model = None
    task = load_task("log-templates")[0]
    asked = task.log_ask_model if ask_model is None else ask_model
    if asked:
        from workhorse.logparse.model import TemplateModel
        from workhorse.tasks.engines import engine_config, open_engine

        model = model or task.model
        template_model = TemplateModel(open_engine(model, engine_config(threads=threads, kinds=["logs"])))
    apart = [n.strip() for n in ports_apart.split(",")] if ports_apart else []
    report = run_logs(roots, template_model, names=names, repeats=repeats, block=block, first=first, model_below=model_below or None,
                      ports_apart=apart, log=say)
    report["model"] = model if asked else None
    report["machine"] = {"cpu": _cpu_name(), "threads": threads}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table("system", "GA", "PA", "FGA", "FTA", "calls / templates", "lines/s warm", "lines/s cold", "first lines (s)",
                  "drain3 GA", "drain3 PA", title=f"log parsing ({report['model'] or 'no model'}, blocks of {block}) vs drain3")
    rows = list(report["systems"].items()) + [("average", report["average"])]
    for name, r in rows:
        calls = f"{r['model_calls']} / {r['true_templates']}"
        head = f"{r['seconds_first_lines']:.1f}" + (f" ({r['first_lines']})" if "first_lines" in r else "")
        table.add_row(name, *(f"{r[k]:.3f}" for k in ("GA", "PA", "FGA", "FTA")), calls, f"{r['lines_per_s_warm']:,.0f}",
                      f"{r['lines_per_s_cold']:,.1f}", head, f"{r['drain3']['GA']:.3f}", f"{r['drain3']['PA']:.3f}")
    Console().print(table)


def _print_loso_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("system", "chosen on the others (" + "/".join(report["defaults"]) + ")", "GA", "PA", "FGA", "FTA", "GA (defaults)", "PA (defaults)",
                  title="leave-one-system-out (rules without the model)")
    rows = list(report["systems"].items()) + [("average", report["average"])]
    for name, r in rows:
        chosen = "/".join(str(v) for v in r["chosen"].values()) if "chosen" in r else ""
        table.add_row(name, chosen, *(f"{r[k]:.3f}" for k in ("GA", "PA", "FGA", "FTA")),
                      f"{r['defaults']['GA']:.3f}", f"{r['defaults']['PA']:.3f}")
    Console().print(table)


def _print_serve_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("load", "side", "model", "req/s", "p50 ms", "p99 ms", "accuracy", title=f"bench serve ({report['clients']} clients)")
    for load_name in ("classification", "embeddings"):
        for side_name in ("workhorse", "baseline"):
            side = report[load_name][side_name]
            accuracy = f"{100 * side['accuracy']:.1f} %" if "accuracy" in side else ""
            table.add_row(load_name, side_name, side["model"], f"{side['requests_per_s']:.1f}",
                          f"{side['latency_ms']['p50']:.0f}", f"{side['latency_ms']['p99']:.0f}", accuracy)
    Console().print(table)
    typer.echo(f"classification speedup {report['classification']['speedup']:.1f}×, embeddings speedup "
               f"{report['embeddings']['speedup']:.1f}×; embeddings p99 at half load "
               f"{report['embeddings']['p99_ms_at_half_load']:.0f} ms; workhorse serve peak RSS "
               f"{report['workhorse_rss_mb_peak']:.0f} MiB")
    encoder = report.get("embeddings_encoder")
    if encoder:
        zipf = encoder["zipf"]
        typer.echo(f"encoder {encoder['model']}: {encoder['workhorse']['requests_per_s']:.1f} req/s at {report['clients']} clients "
                   f"({encoder['speedup']:.1f}× llama_cpp.server), p99 at half load {encoder['p99_ms_at_half_load']:.0f} ms "
                   f"(cache off); Zipf s={zipf['s']}: cache on {zipf['cache_on']['requests_per_s']:.1f} req/s, p99 "
                   f"{zipf['cache_on']['p99_ms_at_half_load']:.0f} ms, hit rate {100 * (zipf['cache_on']['hit_rate'] or 0):.0f} % "
                   f"(cache off {zipf['cache_off']['requests_per_s']:.1f} req/s, p99 {zipf['cache_off']['p99_ms_at_half_load']:.0f} ms)")


def _bench_setup(data: str, task: str, train: str, classify_model: str, embed_model: str, threads: int, console):
    from workhorse.bench.serve_bench import Setup
    from workhorse.evals.datasets import load

    _ensure_trained(task, train, threads, console)
    return Setup(load(data), task, classify_model, embed_model, threads, console.print)


def _ensure_trained(task: str, train: str, threads: int, console) -> None:
    from workhorse.errors import TaskNotFoundError
    from workhorse.tasks.store import load_task

    try:
        load_task(task)
    except TaskNotFoundError:
        console.print(f"task {task!r} not found: training it on {train} first")
        from workhorse.cli.fit import describe, train_head

        summary = train_head(train, task, prompt='This customer message: "{text}" means in one word: "', threads=threads)
        console.print(describe(summary))  # a notice: stdout carries the benchmark's output alone


def _installed(name: str) -> bool:
    from workhorse.models import status

    return status(name).packages_installed


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from workhorse.bench.engine_bench import table_rows

    table = Table(title=f"workhorse bench engine — {report['machine']['cpu']}, GEMM {report['gemm_gflops']:.0f} GFLOP/s")
    table.add_column("measure")
    for name in report["models"]:
        table.add_column(name, justify="right")
    for label, cells in table_rows(report):
        table.add_row(label, *cells)
    Console(width=max(100, Console().width)).print(table)


@app.command("adversarial")
def adversarial(
    n: int = typer.Option(1000, min=1, help="Hostile requests per public route."),
    url: str = typer.Option(None, help="Attack this running server (its models and tasks) instead of starting one."),
    models: list[str] = typer.Option(None, "--model", "-m", help="Models of the server started here (default: the built-ins)."),
    concurrency: int = typer.Option(8, min=1, help="Requests in flight at once."),
    seed: int = typer.Option(0, help="Seed of the generated requests."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Generated hostile inputs on every public route while /healthz is probed: no 5xx (504 at a
    request's own deadline is its contract), none past its deadline + 1 s, /healthz within 100 ms."""
    import contextlib
    import sys

    import httpx

    from workhorse.bench.adversarial import attack, failures
    from workhorse.bench.serve_bench import free_port, server

    with contextlib.ExitStack() as stack:
        if url is None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "workhorse.cli", "serve", "--port", str(port)]
            command += [arg for model in models or [] for arg in ("--model", model)]
            typer.echo(f"starting {' '.join(command)}", err=True)
            stack.enter_context(server(command, url, "/readyz"))
        served_models = [m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]]
        served_tasks = [t["name"] for t in httpx.get(url + "/v1/tasks", timeout=10).json()["data"]]
        typer.echo(f"{n} hostile requests per route against {url} ({', '.join(served_models)}; tasks: "
                   f"{', '.join(served_tasks) or 'none'})", err=True)
        report = attack(url, n_per_route=n, models=served_models, tasks=served_tasks, concurrency=concurrency, seed=seed)
    report["failures"] = failures(report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, route in report["routes"].items():
            typer.echo(f"{name:12} {route['requests']:6} requests  statuses {route['statuses']}  slowest {route['slowest_s']} s")
        health = report["healthz_ms"]
        typer.echo(f"/healthz: {health['probes']} probes, p50 {health['p50']:.1f} ms, p99 {health['p99']:.1f} ms, "
                   f"max {health['max']:.1f} ms")
        typer.echo("held: no failures" if not report["failures"] else "FAILED:\n  " + "\n  ".join(report["failures"]))
    if report["failures"]:
        raise typer.Exit(1)


@app.command("flywheel")
def flywheel(
    data: str = typer.Option("banking77", help="A dataset with train and test splits (its NAME:train and NAME:test)."),
    train: str = typer.Option(None, help="The rows the seed, the validation rows and the traffic come from (default: DATA:train)."),
    test: str = typer.Option(None, help="The rows measured after each round; never traffic, never used for a choice (default: DATA:test)."),
    seed_per_label: int = typer.Option(10, min=1, help="Labelled rows per label that train round 0."),
    validation_per_label: int = typer.Option(10, min=1, help="Rows per label held out for the gates and the escalation threshold."),
    rounds: int = typer.Option(3, min=1, help="Rounds of traffic, each followed by a dataset build, training and a gate."),
    budget: float = typer.Option(0.2, min=0.0, max=1.0, help="The share of a round's traffic the teacher may label, at most."),
    traffic_per_round: int = typer.Option(None, min=1, help="Items per round (default: the traffic pool divided by --rounds)."),
    method: str = typer.Option("head", help="The training method, passed to `workhorse train`'s trainer."),
    model: str = typer.Option("gemma3-270m", help="The small model."),
    seed: int = typer.Option(0, help="Seed of every choice of rows (seed, validation, traffic order)."),
    pseudo_labels: bool = typer.Option(False, "--pseudo-labels/--no-pseudo-labels",
                                       help="Train on the small model's own answers at or above --min-confidence too."),
    min_confidence: float = typer.Option(0.9, min=0.0, max=1.0, help="The confidence a pseudo-label needs."),
    gold_ceiling: bool = typer.Option(True, "--gold-ceiling/--no-gold-ceiling",
                                      help="Also train the method on every gold label the loop could have seen."),
    upstream: str = typer.Option(None, help="A real OpenAI-compatible upstream as teacher instead of the gold labels."),
    upstream_model: str = typer.Option(None, help="The model of --upstream."),
    upstream_api_key_env: str = typer.Option(None, help="Environment variable with the API key of --upstream."),
    margin: float = typer.Option(0.005, min=0.0, help="The gate: a candidate must beat the active version by this."),
    max_latency_ratio: float = typer.Option(
        10.0, min=1.0, help="The gate: the candidate's median latency may be at most this × the active version's. Far "
        "looser than `train`'s 1.2, so that only a gross slowdown fails: a head costs what the one it replaces costs, and "
        "on a shared machine two medians of the same head, timed minutes apart, differed by 1.5× and 2.2× (the gate now "
        "times both sides in turn, which narrows this)."),
    workdir: Path = typer.Option(None, help="Where the run's task store, call log and datasets go (default: a new temporary folder)."),
    threads: int = typer.Option(2, help="llama.cpp threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The learning loop end to end: a seed trains v1; each round's traffic goes through the
    pipeline, the least confident items (at most --budget) to the teacher; the call log becomes a
    dataset, a candidate is trained, gated and promoted; the test split measures every round."""
    import tempfile

    from workhorse.bench.flywheel_bench import FlywheelConfig, run
    from workhorse.calllog.prices import PriceTable
    from workhorse.cli.progress import progress
    from workhorse.paths import prices_path

    options = None
    if upstream or upstream_model:
        from workhorse.escalation.override import command_line_upstream

        options = command_line_upstream(None, base_url=upstream, model=upstream_model, api_key_env=upstream_api_key_env,
                                        option="--upstream", fresh={"timeout_s": 60.0})
    workdir = workdir or Path(tempfile.mkdtemp(prefix="workhorse-flywheel-"))
    config = FlywheelConfig(
        train=train or f"{data}:train", test=test or f"{data}:test", workdir=workdir, seed_per_label=seed_per_label,
        validation_per_label=validation_per_label, rounds=rounds, budget=budget, traffic_per_round=traffic_per_round,
        method=method, model=model, seed=seed, pseudo_labels=pseudo_labels, min_confidence=min_confidence, margin=margin,
        max_latency_ratio=max_latency_ratio, gold_ceiling=gold_ceiling, threads=threads, upstream=options,
        prices=PriceTable.load(prices_path()),
    )
    typer.echo(f"bench flywheel: run folder {workdir}", err=True)
    with _run_home(workdir):
        report = run(config, progress=progress,
                     log=lambda line: typer.echo(line, err=True))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_flywheel_table(report)


@contextlib.contextmanager
def _run_home(workdir: Path):
    """A workhorse home of the run's own under `workdir` (its task store, heads and datasets),
    sharing the models of the user's home, which it links to rather than assembles again."""
    from workhorse.paths import models_dir

    models = models_dir()
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(models, target_is_directory=True)
    saved = os.environ.get("WORKHORSE_HOME")
    os.environ["WORKHORSE_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("WORKHORSE_HOME", None)
        else:
            os.environ["WORKHORSE_HOME"] = saved


def _print_flywheel_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    data = report["data"]
    title = (f"bench flywheel on {data['train']} → {data['test']}: {report['method']} on {report['model']}, "
             f"budget {100 * report['budget']:.0f} %, pseudo-labels {'on' if report['pseudo_labels'] else 'off'}")
    table = Table("round", "traffic", "to teacher", "train rows", "by source", "version", "test acc.",
                  "esc. for 98 %", f"acc. +teacher {100 * report['budget']:.0f} %", "seconds", title=title)
    for row in report["rounds"]:
        sources = ", ".join(f"{name} {n}" for name, n in row["rows_by_source"].items())
        version = f"v{row['version']}" + ("" if row["promoted"] else f" (v{row['candidate_version']} not promoted)")
        sent = f"{row['upstream_calls']} ({100 * row['upstream_rate']:.1f} %)" if row["traffic_rows"] else "–"
        table.add_row(str(row["round"]), str(row["traffic_rows"]), sent, str(row["train_rows"]), sources, version,
                      f"{100 * row['test_accuracy']:.1f} %", f"{100 * row['escalation_rate_for_98']:.1f} %",
                      f"{100 * row['test_accuracy_with_teacher_at_budget']:.1f} %", f"{row['seconds']:.0f}")
    Console(width=max(140, Console().width)).print(table)
    typer.echo(f"teacher: {report['teacher']}; upstream cost {sum(r['upstream_cost'] for r in report['rounds']):.4f} USD "
               f"(priced as {report['upstream_priced_as']})")
    if report["gold_ceiling"]:
        ceiling = report["gold_ceiling"]
        typer.echo(f"gold ceiling ({ceiling['train_rows']} gold rows): test accuracy {100 * ceiling['test_accuracy']:.1f} %, "
                   f"escalation for 98 % {100 * ceiling['escalation_rate_for_98']:.1f} %")
    typer.echo(f"data: {data['seed_rows']} seed, {data['validation_rows']} validation, {data['traffic_rows']} traffic of "
               f"{data['traffic_pool_rows']} in the pool, {data['test_split_rows']} test; wall time {report['seconds'] / 60:.1f} min")


@app.command("console")
def console_pages(
    calls: int = typer.Option(1_000_000, min=1, help="Calls in the log the pages read."),
    db: Path = typer.Option(None, help="The call log to fill and read (default: console-bench.db in $WORKHORSE_HOME); "
                            "an existing one is read as it is unless --refill."),
    refill: bool = typer.Option(False, help="Fill the log anew even if it exists."),
    repeat: int = typer.Option(15, min=2, help="Requests per page."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The console's pages over a call log of a million calls: p50/p95 render time per page."""
    from rich.console import Console

    from workhorse.bench.console_bench import run
    from workhorse.paths import workhorse_home

    console = Console(stderr=True)
    report = run(db or workhorse_home() / "console-bench.db", calls, repeat=repeat, refill=refill, log=console.print)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if report["fill"]:
        fill = report["fill"]
        typer.echo(f"filled {fill['calls']:,} calls in {fill['fill_seconds']:.0f} s ({fill['calls_per_s']:,.0f} calls/s, "
                   f"{fill['file_mb']:.0f} MiB)")
    typer.echo(f"{'page':<40} {'p50 ms':>8} {'p95 ms':>8}")
    for name, page in report["pages"].items():
        typer.echo(f"{name:<40} {page['p50_ms']:>8.1f} {page['p95_ms']:>8.1f}")
    typer.echo(f"worst p95: {report['worst_p95_ms']:.1f} ms ({report['worst_page']}); target {report['target_ms']} ms")


@app.command("scale")
def scale(
    data: str = typer.Option("bitext_cs:test", help="Tickets for the job (repeated to --items rows)."),
    items: int = typer.Option(5000, min=1, help="Rows in the job."),
    task: str = typer.Option("bitext-intents", help="The classify task; trained from --train if missing."),
    train: str = typer.Option("bitext_cs:train", help="Training data used when the task does not exist yet."),
    threads: int = typer.Option(2, help="llama.cpp threads of the plain run (the Ray runs use the same cores in total)."),
    batch: int = typer.Option(32, help="Items per engine call."),
    repeat: int = typer.Option(2, min=1, help="Rounds of the three configurations, in alternation."),
    postgres: str = typer.Option(None, help="A PostgreSQL URL for the call log's write rate (an empty database; "
                                 "without it only SQLite's is measured)."),
    writers: int = typer.Option(8, min=1, help="Concurrent writers for the call log's write rate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """A plain `workhorse run` against Ray with 1 and 2 actors on the same cores; the call log's write rate."""
    import tempfile

    from rich.console import Console

    from workhorse.bench.scale_bench import cpu_count, log_write_rates, time_runs, write_items
    from workhorse.evals.datasets import load

    console = Console(stderr=True)
    _ensure_trained(task, train, threads, console)
    with tempfile.TemporaryDirectory(prefix="workhorse-scale-") as scratch:
        path = Path(scratch) / "items.jsonl"
        write_items([example.text for example in load(data).examples], items, path)
        report = time_runs(task, path, threads=threads, batch=batch, repeat=repeat, workdir=Path(scratch), log=console.print)
    report["call_log_write"] = log_write_rates(postgres, writers=writers)
    report["machine"] = {"cpu": _cpu_name(), "cores": cpu_count()}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for name, config in report["configs"].items():
        runs = ", ".join(f"{rate:.1f}" for rate in config["runs_items_per_s"])
        typer.echo(f"{name:<10} {config['items_per_s']:>8.1f} items/s (runs: {runs})")
    typer.echo(f"Ray's best ({report['ray_best_config']}) / plain: {report['ratio']:.3f}; overhead "
               f"{report['ray_overhead_ms_per_item']:.2f} ms per item; answers differing: {report['answers_differing_from_plain']}; "
               f"confidences differing: {report['confidences_differing_from_plain']}")
    for kind, rate in report["call_log_write"].items():
        if rate:
            typer.echo(f"call log ({kind}), {rate['writers']} writers: {rate['calls_per_s']:,.0f} calls/s")
