"""`workhorse --help` must stay instant: no llama.cpp, torch or numpy import at startup."""

from __future__ import annotations

import subprocess
import sys


def test_help_imports_no_heavy_modules():
    code = (
        "import sys, workhorse.cli\n"
        "heavy = [m for m in ('llama_cpp', 'torch', 'numpy', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_help_and_version_run():
    out = subprocess.run([sys.executable, "-m", "workhorse.cli", "--help"], capture_output=True, text=True, check=True)
    assert "models" in out.stdout and "bench" in out.stdout
    version = subprocess.run([sys.executable, "-m", "workhorse.cli", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("workhorse ")
