"""`workhorse bench …`: benchmarks measured on this machine, side by side with their anchors."""

from __future__ import annotations

import json
import os
import platform

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
