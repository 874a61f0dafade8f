"""`workhorse --help` must stay instant: no llama.cpp, torch or numpy import at startup, and none of
the server's stack (the serve flags are built from its settings tree only when `serve` runs)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_help_imports_no_heavy_modules():
    code = (
        "import sys, workhorse.cli\n"
        "heavy = [m for m in ('llama_cpp', 'torch', 'numpy', 'transformers', 'pydantic', 'pydantic_settings',"
        " 'fastapi', 'uvicorn', 'httpx', 'yaml') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_help_and_version_run():
    out = subprocess.run([sys.executable, "-m", "workhorse.cli", "--help"], capture_output=True, text=True, check=True)
    assert "models" in out.stdout and "bench" in out.stdout
    assert "--version  Print the version." in out.stdout  # a flag, not `--version <bool>`
    version = subprocess.run([sys.executable, "-m", "workhorse.cli", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("workhorse ")


def test_serve_help_lists_the_flags_generated_from_the_settings():
    out = subprocess.run([sys.executable, "-m", "workhorse.cli", "serve", "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "200"})
    for flag in ("--port", "--model", "--call-log", "--queue-limit", "--config"):
        assert flag in out.stdout
    assert "WORKHORSE_QUEUE_LIMIT" in out.stdout


def test_serve_rejects_a_bad_flag_value():
    out = subprocess.run([sys.executable, "-m", "workhorse.cli", "serve", "--port", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "--port" in out.stderr
