"""Redaction coverage: planted secrets removed, ordinary texts left alone, and the time it takes.

1. Recall on generated corpora (made by code in the test suite, nothing copied): 225 secret
   formats, each in an assignment, in prose and in a URI or HTTP header
   (`tests/test_privacy_formats.py`), with several seeds; and the 220-item English and Chinese
   corpus of personal data and keys (`tests/test_privacy.py`).
2. False positives on real customer-support texts (BANKING77 test, bitext_cs test): how many
   items redaction changes, by kind, each listed so a reader can judge which are true personal
   data. Phone numbers are counted apart, since libphonenumber decides them.
3. Milliseconds per item on those texts, the fastest of 5 passes after a warm-up (the secret
   rules compile once per process). `--before REV` times the redactor of an earlier commit on the
   same texts, and measures its recall on the generated corpus.
4. With `--detect-secrets` (after `pip install detect-secrets==1.5.0`), Yelp's scanner with its
   default plugins and filters on the same corpus and texts, for comparison.

    python benchmarks/redaction_coverage.py
    python benchmarks/redaction_coverage.py --seeds 10 --before c094b6c --detect-secrets
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

from workhorse.evals.datasets import load
from workhorse.privacy import redact

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("banking77:test", "bitext_cs:test")


def ms_per_item(texts: list[str], repeats: int = 5) -> float:
    """The fastest of a few passes: on a shared machine, the slower ones measure the neighbours."""
    redact("warm up: the secret rules compile on the first call")
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            redact(text)
        runs.append((time.perf_counter() - start) / len(texts) * 1000)
    return min(runs)


def planted_recall(seeds: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))  # the corpora live with their tests
    import test_privacy
    import test_privacy_formats

    print("Planted secrets (generated; removed = no 10-character run of the secret is left)")
    shares = []
    for seed in range(seeds):
        corpus = test_privacy_formats.secret_corpus(seed)
        share, misses = test_privacy_formats.recall(corpus)
        shares.append(share)
        by_context = Counter(planted.context for planted, _ in misses)
        print(
            f"  seed {seed}: {len(test_privacy_formats.FORMATS)} formats x 3 contexts = {len(corpus)} items, "
            f"{share:.2%} removed, missed {len(misses)} {dict(by_context)}"
        )
        for planted, redacted in misses:
            print(f"      {planted.format} / {planted.context}: {redacted[:140]!r}")
    print(f"  over {seeds} seeds: mean {statistics.mean(shares):.2%}, lowest {min(shares):.2%}")

    values = leaked = 0
    for item in test_privacy.CORPUS:
        text = redact(item.text).text
        for _, _, value in item.values:
            values += 1
            leaked += value in text
    print(f"  personal-data corpus: {len(test_privacy.CORPUS)} items, {values} values, {values - leaked} removed")


def false_positives() -> dict[str, list[str]]:
    from workhorse.privacy.phones import valid_numbers  # not in the commits `--before` may name

    texts: dict[str, list[str]] = {}
    print("\nOrdinary texts changed by redaction")
    for name in DATASETS:
        texts[name] = [example.text for example in load(name).examples]
        changed = [(text, redact(text)) for text in texts[name]]
        changed = [(text, result) for text, result in changed if result.text != text]
        kinds = Counter(kind for _, result in changed for kind in result.counts)
        print(f"  {name}: {len(changed)} of {len(texts[name])} items ({len(changed) / len(texts[name]):.2%}) {dict(kinds)}")
        # libphonenumber's own verdict, before the layout rules of `phones` (dates, order numbers).
        by_library = sum(any(True for _ in valid_numbers(text)) for text in texts[name])
        print(f"    phone numbers: {kinds['PHONE']} redacted; items with a number libphonenumber accepts: {by_library}")
        for text, result in changed:
            print(f"    {text!r} -> {result.text!r}")
    return texts


def timing(texts: dict[str, list[str]], before: str | None) -> None:
    print("\nTime per item (fastest of 5 passes, after a warm-up)")
    for name, items in texts.items():
        print(f"  {name}: {ms_per_item(items):.3f} ms")
    if before:
        print(f"\nThe redactor at {before}")
        for name, line in _time_revision(before, texts).items():
            print(f"  {name}: {line}")


def _time_revision(revision: str, texts: dict[str, list[str]]) -> dict[str, str]:
    """The same timing with the privacy package of an earlier commit, in a child process."""
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "src.tar"
        subprocess.run(["git", "archive", "-o", archive, revision, "src"], cwd=ROOT, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        data = Path(folder) / "texts.json"
        data.write_text(json.dumps(texts))
        env = {**os.environ, "PYTHONPATH": str(Path(folder) / "src")}
        child = subprocess.run(
            [sys.executable, __file__, "--time-only", str(data)], env=env, check=True, capture_output=True, text=True
        )
        return json.loads(child.stdout)


def compare_detect_secrets() -> None:
    """Recall and false positives of detect-secrets, counted the same way. Its API scans files, so
    each text is written to one first (included in its time)."""
    import test_privacy_formats
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    def flagged(text: str, path: Path) -> str:
        path.write_text(text)
        found = SecretsCollection()
        found.scan_file(str(path))
        return "\n".join(secret.secret_value or "" for _, secret in found)

    print("\ndetect-secrets, default plugins and filters")
    corpus = test_privacy_formats.secret_corpus(0)
    with tempfile.TemporaryDirectory() as folder, default_settings():
        path = Path(folder) / "item.txt"
        start = time.perf_counter()
        caught = 0
        for planted in corpus:
            reported = flagged(planted.text, path)
            # Caught when a reported value holds a 10-character run of the secret: more lenient
            # than the measure above, which asks that no such run is left.
            caught += any(
                secret[i : i + 10] in reported for secret in planted.secrets if len(secret) >= 5
                for i in range(max(1, len(secret) - 9))
            )
        elapsed = (time.perf_counter() - start) / len(corpus) * 1000
        print(f"  seed 0: {caught} of {len(corpus)} planted secrets caught ({caught / len(corpus):.2%}), {elapsed:.2f} ms per item")
        for name in DATASETS:
            texts = [example.text for example in load(name).examples]
            hits = sum(bool(flagged(text, path)) for text in texts)
            print(f"  {name}: {hits} of {len(texts)} items flagged")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="generated corpora to measure recall on")
    parser.add_argument("--before", metavar="REV", help="also time the redactor of this commit")
    parser.add_argument("--detect-secrets", action="store_true", help="compare with detect-secrets (installed)")
    parser.add_argument("--time-only", metavar="JSON", help=argparse.SUPPRESS)  # the child of --before
    args = parser.parse_args()
    if args.time_only:
        texts = json.loads(Path(args.time_only).read_text())
        figures = {name: f"{ms_per_item(items):.3f} ms per item" for name, items in texts.items()}
        sys.path.insert(0, str(ROOT / "tests"))  # this checkout's corpus, that commit's redactor
        import test_privacy_formats

        share, _ = test_privacy_formats.recall(test_privacy_formats.secret_corpus(0))
        figures["generated corpus, seed 0"] = f"{share:.2%} of planted secrets removed"
        print(json.dumps(figures))
        return
    planted_recall(args.seeds)
    timing(false_positives(), args.before)
    if args.detect_secrets:
        compare_detect_secrets()


if __name__ == "__main__":
    main()
