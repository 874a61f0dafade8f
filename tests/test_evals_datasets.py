"""Dataset loaders: the shared public datasets (skipped where absent) and users' files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from workhorse.errors import DatasetFormatError, DatasetNotFoundError, WorkhorseError
from workhorse.evals import available, datasets_root, load, load_file, sample
from workhorse.evals import datasets as datasets_module


def _shared_root() -> Path | None:
    try:
        return datasets_root()
    except DatasetNotFoundError:
        return None


needs_shared = pytest.mark.skipif(_shared_root() is None, reason="no shared datasets folder (../shared/datasets)")


# ---------------------------------------------------------------- the shared datasets


@needs_shared
def test_banking77() -> None:
    test = load("banking77:test")
    assert len(test) == 3080
    assert len(test.labels) == 77 and test.kind == "classify" and test.language == "en"
    assert test.examples[17].id == "banking77:test:17"
    assert len(load("banking77:train")) == 10003


@needs_shared
def test_clinc150_includes_its_oos_rows() -> None:
    test = load("clinc150:test")
    counts = Counter(e.label for e in test.examples)
    assert len(test) == 4500 + 1000 and counts["oos"] == 1000
    assert len(test.labels) == 151 and "oos" in test.labels and test.oos_label == "oos"
    inscope = load("clinc150:test_inscope")
    assert len(inscope) == 4500 and len(inscope.labels) == 150 and inscope.oos_label is None
    assert len(load("clinc150:val")) == 3000 + 100
    assert len(load("clinc150:train_inscope")) == 15000 and len(load("clinc150:train")) == 15000 + 100


@needs_shared
def test_loghub_events_queries_find_one_corpus_line_per_event() -> None:
    corpus, queries = load("loghub_events:corpus"), load("loghub_events:queries")
    # One corpus line per (system, template): Linux's E17-E19 share one template text, so 411 EventIds make 409 events.
    assert len(corpus) == len(corpus.labels) == 409
    assert Counter(e.label for e in corpus.examples).most_common(1)[0][1] == 1
    per_event = Counter(e.label for e in queries.examples)
    assert max(per_event.values()) == datasets_module.QUERIES_PER_EVENT and set(per_event) <= set(corpus.labels)
    first = {e.label: e.text for e in corpus.examples}
    assert all(" ".join(e.text.split()) != " ".join(first[e.label].split()) for e in queries.examples)
    assert len({e.text for e in queries.examples}) == len(queries)  # no query repeats another
    assert [e.id for e in load("loghub_events:queries").examples] == [e.id for e in queries.examples]
    assert corpus.examples[0].id == "loghub_events:Apache:1"


def test_default_index_is_the_train_split_or_the_corpus() -> None:
    assert datasets_module.default_index("banking77:test") == "banking77:train"
    assert datasets_module.default_index("clinc150:test_inscope") == "clinc150:train_inscope"
    assert datasets_module.default_index("loghub_events:queries") == "loghub_events:corpus"
    with pytest.raises(DatasetNotFoundError, match="no index"):
        datasets_module.default_index("my-file.jsonl")


@needs_shared
def test_bitext_intents_and_entities() -> None:
    test = load("bitext_cs:test")
    assert len(test) == 810 and len(test.labels) == 27
    entities = load("bitext_cs_entities:test")
    assert entities.kind == "extract" and 0 < len(entities) < 810
    assert all(e.fields and len(e.fields) == 1 for e in entities.examples)
    # The extraction view keeps the classification view's ids, so the two can be joined.
    by_id = {e.id: e for e in test.examples}
    first = entities.examples[0]
    assert by_id[first.id].text == first.text
    value = next(iter(first.fields.values()))
    assert value.lower() in first.text.lower()


@needs_shared
def test_nlupp_folds_and_slots() -> None:
    train, test = load("nlupp_banking:train"), load("nlupp_banking:test")
    assert len(train) + len(test) == 2071 and len(train.labels) == 48
    assert train.kind == "multilabel" and "folds 0-9" in train.note
    assert {e.id.split(":")[1] for e in test.examples} == {f"fold{k}" for k in range(10, 20)}
    hotels = load("nlupp_hotels:train")
    assert len(hotels) + len(load("nlupp_hotels:test")) == 1009 and len(hotels.labels) == 40
    slots = load("nlupp_banking_slots:test")
    assert slots.kind == "extract" and all(e.fields for e in slots.examples) and len(slots.labels) == 13


@needs_shared
def test_smp2019_split_is_seeded_deterministic_and_stratified() -> None:
    train, test = load("smp2019:train"), load("smp2019:test")
    assert len(train) + len(test) == 2579
    assert abs(len(test) - 0.2 * 2579) < 15
    assert not {e.id for e in train.examples} & {e.id for e in test.examples}
    assert len(train.labels) == 23 and train.language == "zh" and "seed=0" in test.note
    assert [e.id for e in load("smp2019:test").examples] == [e.id for e in test.examples]
    assert [e.id for e in load("smp2019:test", seed=1).examples] != [e.id for e in test.examples]
    train_counts, test_counts = Counter(e.label for e in train.examples), Counter(e.label for e in test.examples)
    for label, n in train_counts.items():
        if n + test_counts[label] >= 20:
            assert 0.12 <= test_counts[label] / (n + test_counts[label]) <= 0.28, label
    assert len(load("smp2019_domain:test").labels) == 29


@needs_shared
def test_cluener2020() -> None:
    test = load("cluener2020:test")
    assert len(test) == 1343 and len(test.labels) == 10 and test.language == "zh"
    first = test.examples[0]
    assert first.fields == {"address": ["台湾"], "name": ["彭小军"]}


@needs_shared
def test_limit_is_a_deterministic_stratified_sample() -> None:
    small = load("banking77:test", limit=154)  # 40 rows per label: exactly 2 of each
    assert len(small) == 154
    assert set(Counter(e.label for e in small.examples).values()) == {2}
    assert [e.id for e in load("banking77:test", limit=154).examples] == [e.id for e in small.examples]
    assert [e.id for e in load("banking77:test", limit=154, seed=3).examples] != [e.id for e in small.examples]
    assert "stratified sample" in small.note


def test_available_lists_every_spec() -> None:
    catalogue = available()
    assert catalogue["clinc150"] == ["train", "val", "test", "train_inscope", "val_inscope", "test_inscope"]
    assert {"banking77", "bitext_cs_entities", "nlupp_hotels_slots", "smp2019", "cluener2020"} <= set(catalogue)


# ---------------------------------------------------------------- finding the root


def test_missing_root_names_the_paths_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKHORSE_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets_module, "_REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DatasetNotFoundError) as err:
        load("banking77:test")
    assert str(tmp_path / ".." / "shared" / "datasets") in err.value.message
    assert str(tmp_path / "repo" / ".." / "shared" / "datasets") in err.value.message
    assert "WORKHORSE_DATASETS" in err.value.hint
    assert isinstance(err.value, WorkhorseError)


def test_env_root_is_used_and_a_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_text("text,category\nhi,greet\nlost card,lost\nbye,bye\n")
    monkeypatch.setenv("WORKHORSE_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="test.csv"):
        load("banking77:test")
    (tmp_path / "banking77" / "test.csv").write_text('text,category\n"card, lost",lost\n')
    test = load("banking77:test")
    assert test.examples[0].text == "card, lost" and test.labels == ["bye", "greet", "lost"]


def test_unknown_dataset_or_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORKHORSE_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'nope'") as err:
        load("nope:test")
    assert "banking77" in err.value.hint
    with pytest.raises(DatasetNotFoundError, match="no split 'dev'") as err:
        load("banking77:dev")
    assert "banking77:test" in err.value.hint
    with pytest.raises(DatasetNotFoundError, match="no split given"):
        load("banking77")
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        load(str(tmp_path / "missing.jsonl"))


# ---------------------------------------------------------------- users' files


def test_jsonl_classify_multilabel_extract(tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    path.write_text('{"text": "lost my card", "label": "lost", "id": "t1"}\n\n{"text": "hello", "label": "greet"}\n')
    data = load(str(path))  # a path is loaded as a file
    assert data.kind == "classify" and data.labels == ["greet", "lost"] and data.language == "en"
    assert [e.id for e in data.examples] == ["t1", "tickets.jsonl:3"]

    multi = tmp_path / "multi.jsonl"
    multi.write_text('{"text": "cancel and refund", "labels": ["cancel", "refund"]}\n')
    assert load_file(multi).kind == "multilabel" and load_file(multi).examples[0].labels == ("cancel", "refund")

    fields = tmp_path / "fields.jsonl"
    fields.write_text('{"text": "张三在北京", "fields": {"name": ["张三"], "address": ["北京"]}}\n')
    loaded = load_file(fields)
    assert loaded.kind == "extract" and loaded.labels == ["address", "name"] and loaded.language == "zh"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "oops", "label": "x"', "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"label": "x"}', 'missing or empty "text"'),
        ('{"text": "a", "label": 3}', '"label" must be a string'),
        ('{"text": "a", "labels": "x"}', '"labels" must be a list of strings'),
        ('{"text": "a", "fields": [1]}', '"fields" must be an object'),
    ],
)
def test_bad_jsonl_line_is_named_with_its_number(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "fine too", "label": "b"}\n' + line + "\n")
    with pytest.raises(DatasetFormatError) as err:
        load_file(path)
    assert f"{path}:3:" in err.value.message and message in err.value.message
    assert err.value.hint


def test_jsonl_bad_encoding_and_mixed_targets(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DatasetFormatError, match="latin1.jsonl:2: not UTF-8"):
        load_file(path)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": "x"}\n{"text": "b", "labels": ["x"]}\n')
    with pytest.raises(DatasetFormatError, match="mixed.jsonl:2:"):
        load_file(mixed)


def test_csv_files(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text('text,intent,extra\n"hi, there",greet,1\nbye,,2\n')
    data = load_file(path)
    assert [(e.text, e.label) for e in data.examples] == [("hi, there", "greet"), ("bye", None)]
    assert data.labels == ["greet"] and data.examples[1].id == "tickets.csv:3"

    no_text = tmp_path / "no_text.csv"
    no_text.write_text("utterance,label\nhi,greet\n")
    with pytest.raises(DatasetFormatError, match="no_text.csv:1: the header has no `text` column"):
        load_file(no_text)

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\nhi,greet\nbye\n")
    with pytest.raises(DatasetFormatError, match="ragged.csv:3: expected 2 columns"):
        load_file(ragged)

    with pytest.raises(DatasetFormatError, match="unknown file type"):
        (tmp_path / "data.xml").write_text("<x/>")
        load_file(tmp_path / "data.xml")


def test_every_bad_row_is_listed_with_its_line(tmp_path: Path) -> None:
    """fit and eval stop on a file with bad rows, naming all of them (the first ten and a count)."""
    path = tmp_path / "mixed.jsonl"
    lines = ['{"text": "fine", "label": "a"}'] + ["not json"] * 12 + ['{"text": "   ", "label": "b"}']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError) as err:
        load_file(path)
    message = err.value.message
    assert message.startswith(f"13 bad rows in {path}")
    assert all(f"{path}:{line}: not valid JSON" in message for line in range(2, 12))
    assert f"{path}:12:" not in message and "… and 3 more" in message


def test_sample_keeps_label_proportions(tmp_path: Path) -> None:
    path = tmp_path / "skewed.jsonl"
    rows = [f'{{"text": "a{i}", "label": "a"}}' for i in range(80)]
    rows += [f'{{"text": "b{i}", "label": "b"}}' for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    data = load_file(path)
    picked = sample(data, 10, seed=5)
    assert Counter(e.label for e in picked.examples) == {"a": 8, "b": 2}
    assert sample(data, 1000) is data
    with pytest.raises(ValueError):
        sample(data, 0)
