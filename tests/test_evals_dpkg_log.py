"""The generated dpkg log: dpkg's line shapes, seeded, with each line's true template."""

from __future__ import annotations

import json

from workhorse.evals.dpkg_log import LOG_FORMAT, STATES, generate, write_loghub
from workhorse.evals.loghub import load_system
from workhorse.logparse.header import LogFormat
from workhorse.logparse.template import Template


def test_the_same_seed_gives_the_same_log_and_another_a_different_one():
    assert generate(500, seed=4) == generate(500, seed=4)
    assert generate(500, seed=4)[0] != generate(500, seed=5)[0]
    lines, truth = generate(777, seed=1)
    assert len(lines) == len(truth) == 777


def test_each_line_is_a_line_of_its_true_template_and_the_events_are_dpkgs():
    lines, truth = generate(5000, seed=2)
    log_format = LogFormat.parse(LOG_FORMAT)
    for line, template in zip(lines, truth, strict=True):
        header, content = log_format.split(line)
        assert set(header) == {"Date", "Time"}
        assert Template(template).match(content) is not None, (line, template)
    events = set(truth)
    assert 14 <= len(events) <= 20
    assert {"startup archives unpack", "startup packages configure", "upgrade <*> <*> <*>", "install <*> <none> <*>",
            "configure <*> <*> <none>", "trigproc <*> <*> <none>", "remove <*> <*> <none>"} <= events
    assert {t.split(" ")[1] for t in events if t.startswith("status ")} == set(STATES)
    assert any("~deb12u" in line for line in lines) and any(":all " in line for line in lines)


def test_it_lays_out_as_a_loghub_system(tmp_path):
    write_loghub(tmp_path, 300, seed=3)
    system = load_system(tmp_path, "Dpkg")
    assert len(system.lines) == 300 and system.truth_templates == generate(300, seed=3)[1]
    assert json.loads((tmp_path / "log_formats.json").read_text())["Dpkg"]["log_format"] == LOG_FORMAT
