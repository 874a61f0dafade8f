"""The README's five-minute tour runs as written, and long commands show progress lines on stderr.

The tour is the README's ```sh and ```python blocks between `<!-- tour:start -->` and
`<!-- tour:end -->`, run in order as one bash script in an empty directory: a classifier from a
CSV (`tasks new --labels-from`, `eval`, `run`, `fit`), `workhorse serve` in the background with
`curl` calls, the `openai` client against it (chat with a JSON Schema, embeddings), stopping the
server, and `workhorse logs parse` on a log file. The commands are the README's own; the test
changes only what the machine needs:

- `workhorse` on PATH runs this checkout's CLI, with the built-in model names resolved to other
  GGUF files (`TOUR_MODELS`): every name to the tests' tiny random-weight model by default, or
  to the real assembled gemma3-270m and qwen2.5-coder-0.5b in the `slow` variant. Answers of the
  tiny model are noise; the test checks that every step runs and answers in the right shape.
- The port 8080 becomes a free loopback port (in the blocks, and `WORKHORSE_PORT` for the server);
  a Python block runs as `python - <<EOF`.

Every step runs with the tiny model; none needs the real ones. The real-model variant
(`pytest -m slow tests/test_readme_tour.py`) runs the same blocks on the built-in models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The shape of a plain progress line (workhorse.cli.progress): label, done/total, share, rate, time left.
PROGRESS_LINE = re.compile(r"^(?P<label>.+): (?P<done>[\d,]+)/(?P<total>[\d,]+) \((?P<share>\d+) %\), "
                           r"[\d,]+\.\d items/s, \d+:\d\d:\d\d left$")

# `workhorse` for the tour: this checkout's CLI, with built-in model names resolved to the files
# named in TOUR_MODELS (a JSON object: name → .gguf path; "*" for every built-in name).
SHIM = '''\
import json, os
from pathlib import Path

import workhorse.models as models
from workhorse.models import registry

mapping = json.loads(os.environ.get("TOUR_MODELS") or "{}")
real_resolve = registry.resolve


def resolve(name, **kwargs):
    path = mapping.get(name) or (mapping.get("*") if name in registry.BUILTIN_MODELS else None)
    return registry.ResolvedModel(name, Path(path), None) if path else real_resolve(name, **kwargs)


registry.resolve = models.resolve = resolve
from workhorse.cli import main

main()
'''


def tour_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each ```sh and ```python block of the tour, in order."""
    start, end = text.index("<!-- tour:start -->"), text.index("<!-- tour:end -->")
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", text[start:end], flags=re.DOTALL | re.MULTILINE)
    return [(lang, code) for lang, code in blocks if lang in ("sh", "python")]


def tour_script(blocks: list[tuple[str, str]], port: int) -> str:
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2> /dev/null || true' EXIT"]
    for lang, code in blocks:
        code = code.replace("8080", str(port))
        if lang == "python":
            assert "TOUR_PY" not in code
            code = f'"$TOUR_PYTHON" - <<\'TOUR_PY\'\n{code}TOUR_PY\n'
        lines.append(code)
    return "\n".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "workhorse"
    shim.write_text(f"#!{sys.executable}\n{SHIM}")
    shim.chmod(0o755)
    return bin_dir


def run_tour(tmp_path: Path, models: dict[str, str], *, timeout: float) -> tuple[Path, str]:
    """Run the README's tour in tmp_path/tour; returns the directory and the combined output."""
    if shutil.which("curl") is None:
        pytest.skip("the tour calls curl")
    pytest.importorskip("openai")
    blocks = tour_blocks(README.read_text(encoding="utf-8"))
    assert [lang for lang, _ in blocks].count("python") == 1 and len(blocks) >= 5
    work = tmp_path / "tour"
    work.mkdir()
    env = {**os.environ, "PATH": f"{_bin_dir(tmp_path)}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
           "TOUR_PYTHON": sys.executable, "TOUR_MODELS": json.dumps(models)}
    port = _free_port()
    env["WORKHORSE_PORT"] = str(port)  # where `workhorse serve` listens (a setting's variable)
    process = subprocess.Popen(["bash", "-c", tour_script(blocks, port)], cwd=work, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the tour took over {timeout} s:\n{output[-6000:]}")
    finally:
        try:  # the server, should the script have stopped before `kill $!`
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, output[-6000:]
    return work, output


def check_tour(work: Path, output: str, *, real: bool) -> None:
    task = (work / "my-intents.yaml").read_text()
    assert "name: my-intents" in task and task.count("- name: ") == 3
    answers = [json.loads(line) for line in (work / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == ["1", "2"]
    assert all(a["answer"] in {"refund", "login", "delivery"} and a["source"] == "local" for a in answers)
    # eval and run wrote plain progress lines: stderr was not a terminal
    assert any(PROGRESS_LINE.match(line) for line in output.splitlines())
    assert "trained my-intents v1" in output
    served = json.loads(next(line for line in output.splitlines() if '"answers":' in line))
    assert [a["task"] for a in served["answers"]] == ["my-intents", "my-intents"]
    assert all(a["version"] == 1 and a["answer"] in {"refund", "login", "delivery"} for a in served["answers"])
    # the openai block printed the constrained JSON, then the embeddings' count and width
    order = next(line for line in output.splitlines() if line.startswith('{"order_id"'))
    if real:  # the tiny model's answer is cut at max_tokens inside a string
        order = json.loads(order)
        assert set(order) >= {"order_id", "customer", "quantity"} and isinstance(order["quantity"], int)
    assert re.search(r"^2 \d+$", output, flags=re.MULTILINE)
    records = [json.loads(line) for line in (work / "auth.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, 11))
    assert all("<*>" in r["template"] or not r["params"] for r in records)
    assert json.loads(output.strip().splitlines()[-1]) == records[-1]  # `tail -n 1` is the last record


def test_the_readme_tour_runs_as_written(tiny_gguf, tmp_path):
    work, output = run_tour(tmp_path, {"*": str(tiny_gguf)}, timeout=120)
    check_tour(work, output, real=False)


@pytest.mark.slow
def test_the_readme_tour_runs_on_the_built_in_models(real_model_path, tmp_path):
    models = {name: str(real_model_path(name)) for name in ("gemma3-270m", "qwen2.5-coder-0.5b")}
    work, output = run_tour(tmp_path, models, timeout=600)
    check_tour(work, output, real=True)


def test_the_readme_shows_progress_lines_as_they_are():
    """The README's example lines have the shape the test below sees from a real run."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Progress"):text.index("## Headline figures")]
    example = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL).group(1).splitlines()
    assert example and all(PROGRESS_LINE.match(line) for line in example), example


def test_a_long_run_prints_progress_lines_when_stderr_is_not_a_terminal(tiny_gguf, tmp_path):
    """`workhorse run` over 400 items, stderr a pipe: a plain line every 5 %, counts rising to the total."""
    task = tmp_path / "long.yaml"
    task.write_text(json.dumps({
        "name": "long", "kind": "classify", "model": str(tiny_gguf),
        "labels": [{"name": "refund", "examples": ["refund my money", "I want a refund"]},
                   {"name": "login", "examples": ["login error", "cannot login"]}],
    }))
    items = tmp_path / "items.txt"
    items.write_text("".join(f"ticket number {i}: my refund has not arrived\n" for i in range(400)))
    result = subprocess.run([sys.executable, "-m", "workhorse.cli", "run", str(task), str(items), "--batch", "8",
                             "-o", str(tmp_path / "out.jsonl"), "--no-log"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [m for m in map(PROGRESS_LINE.match, result.stderr.splitlines()) if m]
    assert len(lines) >= 15, result.stderr  # 20 steps of 5 %; batches of 8 items are 2 % each
    done = [int(m["done"].replace(",", "")) for m in lines]
    assert done == sorted(done) and done[-1] == 400 and {m["total"] for m in lines} == {"400"}
    assert {m["label"] for m in lines} == {"long v1"}
    assert "\x1b[" not in result.stderr  # no terminal codes: the live bar is for terminals only
