"""The Loghub-layout loader: synthetic systems in tmp_path, and the shared Loghub-2k (skipped where absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from workhorse.errors import DatasetFormatError, DatasetNotFoundError, WorkhorseError
from workhorse.evals.loghub import LoghubSystem, load_system, systems

# The shared datasets sit beside the repository (../shared/datasets), as tests/test_evals_datasets.py
# finds them; a fresh clone has none and these tests skip.
_REPO = Path(__file__).resolve().parents[1]
LOGHUB_2K = _REPO / ".." / "shared" / "datasets" / "loghub_2k"
LOGHUB_SYSTEMS = ["Apache", "HDFS", "Hadoop", "HealthApp", "Linux", "OpenSSH", "Proxifier", "Zookeeper"]
needs_loghub = pytest.mark.skipif(not LOGHUB_2K.is_dir(), reason="no shared Loghub-2k (../shared/datasets/loghub_2k)")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _make_root(tmp_path: Path) -> Path:
    """Two systems: Alpha (corrected CSV, rows out of LineId order) and Beta (only the uncorrected CSV)."""
    root = tmp_path / "bench"
    formats = {
        "Alpha": {"log_file": "Alpha/Alpha_2k.log", "log_format": "<Level> <Content>"},
        "Beta": {"log_file": "Beta/Beta_2k.log", "log_format": r"\[<Time>\] <Content>"},
        "Gamma": {"log_file": "Gamma/Gamma_2k.log", "log_format": "<Content>"},  # no folder: not listed
    }
    (root / "Alpha").mkdir(parents=True)
    (root / "Beta").mkdir()
    (root / "log_formats.json").write_text(json.dumps(formats), encoding="utf-8")

    # A comma and quotes inside Content, a vertical tab inside a line, no final newline.
    (root / "Alpha" / "Alpha_2k.log").write_text(
        'INFO open "a.txt", mode r\nWARN disk\x0bfull 93\nINFO open "b.txt", mode w', encoding="utf-8"
    )
    header = ["LineId", "Level", "Content", "EventId", "EventTemplate"]
    _write_csv(
        root / "Alpha" / "Alpha_2k.log_structured_corrected.csv",
        header,
        [
            ["3", "INFO", 'open "b.txt", mode w', "E1", "open <*>, mode <*>"],
            ["1", "INFO", 'open "a.txt", mode r', "E1", "open <*>, mode <*>"],
            ["2", "WARN", "disk\x0bfull 93", "E2", "disk\x0bfull <*>"],
        ],
    )
    _write_csv(  # stale labels that must lose to the corrected file
        root / "Alpha" / "Alpha_2k.log_structured.csv",
        header,
        [["1", "INFO", "x", "E9", "stale"], ["2", "WARN", "x", "E9", "stale"], ["3", "INFO", "x", "E9", "stale"]],
    )

    # CRLF line ends and a byte that is not UTF-8.
    (root / "Beta" / "Beta_2k.log").write_bytes(b"[t1] ping 1\r\n[t2] caf\xe9 2\r\n")
    _write_csv(
        root / "Beta" / "Beta_2k.log_structured.csv",
        ["LineId", "Time", "Content", "EventId", "EventTemplate"],
        [["1", "t1", "ping 1", "E1", "ping <*>"], ["2", "t2", "caf\ufffd 2", "E2", "caf\ufffd <*>"]],
    )
    return root


def test_systems_lists_those_with_a_folder_sorted(tmp_path: Path) -> None:
    assert systems(_make_root(tmp_path)) == ["Alpha", "Beta"]


def test_load_system_aligns_by_line_id_and_prefers_corrected(tmp_path: Path) -> None:
    alpha = load_system(_make_root(tmp_path), "Alpha")
    assert isinstance(alpha, LoghubSystem) and alpha.name == "Alpha" and len(alpha) == 3
    assert alpha.log_format == "<Level> <Content>"
    assert alpha.lines == ['INFO open "a.txt", mode r', "WARN disk\x0bfull 93", 'INFO open "b.txt", mode w']
    assert alpha.contents == ['open "a.txt", mode r', "disk\x0bfull 93", 'open "b.txt", mode w']
    assert alpha.truth_templates == ["open <*>, mode <*>", "disk\x0bfull <*>", "open <*>, mode <*>"]
    with pytest.raises(AttributeError):
        alpha.name = "other"  # type: ignore[misc]


def test_load_system_falls_back_to_uncorrected_and_replaces_bad_bytes(tmp_path: Path) -> None:
    beta = load_system(_make_root(tmp_path), "Beta")
    assert beta.log_format == r"\[<Time>\] <Content>"
    assert beta.lines == ["[t1] ping 1", "[t2] caf\ufffd 2"]
    assert beta.truth_templates == ["ping <*>", "caf\ufffd <*>"]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        systems(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in err.value.message and err.value.hint


def test_missing_formats_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="log_formats.json"):
        load_system(tmp_path, "Alpha")


def test_system_not_in_formats(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match='"Delta" is not in') as err:
        load_system(_make_root(tmp_path), "Delta")
    assert "Alpha, Beta, Gamma" in err.value.message


def test_missing_log_and_missing_csv(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="log file of Gamma missing") as err:
        load_system(root, "Gamma")
    assert str(root / "Gamma" / "Gamma_2k.log") in err.value.message
    (root / "Beta" / "Beta_2k.log_structured.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="no ground-truth CSV"):
        load_system(root, "Beta")


def test_row_count_mismatch(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    with (root / "Beta" / "Beta_2k.log").open("ab") as f:
        f.write(b"[t3] ping 3\n")
    with pytest.raises(DatasetFormatError, match="has 2 rows but .* has 3 lines") as err:
        load_system(root, "Beta")
    assert err.value.hint


def test_bad_line_ids_and_columns(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    path = root / "Beta" / "Beta_2k.log_structured.csv"
    header = ["LineId", "Time", "Content", "EventId", "EventTemplate"]
    _write_csv(path, header, [["1", "t1", "a", "E1", "a"], ["1", "t2", "b", "E2", "b"]])
    with pytest.raises(DatasetFormatError, match="out of range or repeated"):
        load_system(root, "Beta")
    _write_csv(path, header, [["1", "t1", "a", "E1", "a"], ["two", "t2", "b", "E2", "b"]])
    with pytest.raises(DatasetFormatError, match="not an integer"):
        load_system(root, "Beta")
    _write_csv(path, ["LineId", "Content"], [["1", "a"], ["2", "b"]])
    with pytest.raises(DatasetFormatError, match="lacks column"):
        load_system(root, "Beta")


def test_malformed_formats_entry(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "log_formats.json").write_text(json.dumps({"Alpha": {"log_format": "<Content>"}}), encoding="utf-8")
    with pytest.raises(WorkhorseError, match='"log_file" and "log_format"'):
        load_system(root, "Alpha")


@needs_loghub
def test_loghub_2k_all_systems() -> None:
    assert systems(LOGHUB_2K) == LOGHUB_SYSTEMS
    for name in LOGHUB_SYSTEMS:
        system = load_system(LOGHUB_2K, name)
        assert len(system.lines) == len(system.contents) == len(system.truth_templates) == 2000, name
        assert "<Content>" in system.log_format
        # Alignment check: each Content lies in its raw line. Whitespace is ignored because one
        # HealthApp label has spaces its raw line lacks ("totalSteps=7163 Calories:...").
        for line, content in zip(system.lines, system.contents):
            assert "".join(content.split()) in "".join(line.split()), (name, line, content)
