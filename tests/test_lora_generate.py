"""LoRA on answers for extract and convert tasks, on the tiny llama model: the training sequence
is the engine's prompt then the answer as the grammar writes it, the loss covers the answer only,
runs repeat and resume exactly, llama.cpp with the exported adapter scores the answer as torch
does, and `workhorse train --method lora` runs an extract task end to end."""

from __future__ import annotations

import ctypes
import json
import random

import numpy as np
import pytest

pytest.importorskip("peft")

from workhorse.engine import Engine, EngineConfig, EvalRequest, LlamaModel  # noqa: E402
from workhorse.engine.vocab_bridge import output_tokens  # noqa: E402
from workhorse.errors import TaskError  # noqa: E402
from workhorse.evals.datasets import Dataset, Example, load_file  # noqa: E402
from workhorse.flywheel.adapter_gguf import read_adapter  # noqa: E402
from workhorse.flywheel.gate import MeasuredAnswers, decide  # noqa: E402
from workhorse.flywheel.lora_generate import IGNORED, AnswerLoss, fit_lora_generate, training_sequence  # noqa: E402
from workhorse.flywheel.lora_loop import LoraOptions  # noqa: E402
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model  # noqa: E402
from workhorse.tasks.store import (
    ADAPTER_FILE,  # noqa: E402
    parse_task,  # noqa: E402
)
from workhorse.tasks.structured import StructuredGenerator, StructuredPrompt  # noqa: E402

# Enumerated values: the tiny model's random answers in the gate stay short.
TASK = """
name: {name}
kind: extract
model: {model}
instructions: Extract the action and the city.
schema:
  type: object
  properties:
    action: {{enum: [refund, login, ship]}}
    city: {{enum: [oslo, paris, rome, null]}}
  required: [action, city]
  additionalProperties: false
examples:
  - input: refund my card in rome
    output: {{action: refund, city: rome}}
"""
ACTIONS = {"refund": "refund money back", "login": "login password account", "ship": "ship boat river"}
CITIES = ["oslo", "paris", "rome", None]
FAST = LoraOptions(epochs=2, batch_size=8, learning_rate=1e-2, checkpoint_every=2, threads=1)


def _spec(model, name: str = "orders"):
    return parse_task(TASK.format(name=name, model=model.path if hasattr(model, "path") else model))


def _rows(n: int, seed: int) -> list[tuple[str, dict]]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        action, city = rnd.choice(list(ACTIONS)), rnd.choice(CITIES)
        text = " ".join(rnd.sample(ACTIONS[action].split(), 2)) + (f" in {city}" if city else "")
        rows.append((text, {"city": city, "action": action}))  # not in the schema's order: the grammar's order is trained
    return rows


def _data(n: int = 16, seed: int = 0) -> Dataset:
    return Dataset("orders", "train", [Example(text, fields=fields) for text, fields in _rows(n, seed)], ["action", "city"],
                   "extract", "en")


def _train(model, name: str, steps=None):
    return fit_lora_generate(_spec(model, name), _data(), model, options=FAST, steps=steps)


def _adapter(fitted) -> dict[str, np.ndarray]:
    return read_adapter(fitted.directory / ADAPTER_FILE, architecture="llama", n_head=4, n_head_kv=2)


class _Steps:
    def __init__(self, stop_after: int | None = None) -> None:
        self.steps, self.losses, self.stop_after = 0, [], stop_after

    def start(self, total_tokens: int, done_tokens: int = 0) -> None:
        self.total = total_tokens

    def step(self, tokens: int, loss: float) -> None:
        self.steps += 1
        self.losses.append(loss)
        if self.stop_after is not None and self.steps == self.stop_after:
            raise KeyboardInterrupt


def test_the_training_sequence_is_the_engines_prompt_then_the_answer_and_the_end_of_turn(tiny_model) -> None:
    spec = _spec(tiny_model)
    engine = Engine(tiny_model, EngineConfig(n_ctx=1024, n_threads=1))
    try:
        generator = StructuredGenerator(spec, engine)
        text = "refund money in paris"
        sequence = training_sequence(StructuredPrompt(spec, tiny_model), text, {"city": "paris", "action": "refund"})
        request = generator.request(text)
        prompt_len = len(request.tokens)
        assert sequence.tokens[:prompt_len] == list(request.tokens)
        answer = sequence.tokens[prompt_len:]
        # The grammar writes the properties in the schema's order, with no space before the brace
        # (which the SentencePiece tokenizer would put there), and the turn ends with EOS: the
        # tiny template writes no end-of-turn token of its own.
        assert tiny_model.detokenize(answer[:-1]) == '{"action":"refund","city":"paris"}'
        assert answer[:-1] == output_tokens(tiny_model, '{"action":"refund","city":"paris"}')
        assert tiny_model.tokenize('{"action":"refund","city":"paris"}', add_special=False)[0] != answer[0]
        assert answer[-1] == tiny_model.eos
        constraint = request.constraint
        for token in answer[:-1]:
            assert constraint.allowed_tokens()[token]
            constraint.advance(token)
        assert constraint.is_finished()
        # The loss's labels: the answer and its end, nothing of the prompt.
        assert sequence.labels == [IGNORED] * prompt_len + answer
    finally:
        engine.close()


def test_answers_the_grammar_could_not_write_are_left_out(tiny_model) -> None:
    prompt = StructuredPrompt(_spec(tiny_model), tiny_model)
    assert training_sequence(prompt, "x", {"action": "refund"}) is None  # a required property missing
    assert training_sequence(prompt, "x", {"action": "sing", "city": None}) is None  # not in the enum
    assert training_sequence(prompt, "x", None) is None
    dates = parse_task(f"""
name: dates
kind: convert
model: {tiny_model.path}
target: value
schema: {{type: string, pattern: "^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$"}}
""")
    date_prompt = StructuredPrompt(dates, tiny_model)
    value = training_sequence(date_prompt, "March 3rd, 2024", "2024-03-03")
    assert tiny_model.detokenize(value.tokens[value.prompt_len : -1]) == "2024-03-03"  # the value as it is, not JSON
    assert training_sequence(date_prompt, "March 3rd, 2024", "3 March") is None


def test_the_loss_is_the_cross_entropy_of_the_answer_tokens_only(tiny_model, tiny_gguf) -> None:
    import torch

    prompt = StructuredPrompt(_spec(tiny_model), tiny_model)
    batch = [training_sequence(prompt, text, fields) for text, fields in _rows(3, 1)]
    causal, _ = load_model(tiny_gguf, language_model=True)
    loss = AnswerLoss(causal, "cpu")
    width = max(len(s.tokens) for s in batch)
    ids = torch.tensor([s.tokens + [0] * (width - len(s.tokens)) for s in batch])
    mask = torch.tensor([[1] * len(s.tokens) + [0] * (width - len(s.tokens)) for s in batch])
    labels = torch.tensor([s.labels + [IGNORED] * (width - len(s.tokens)) for s in batch])
    with torch.no_grad():
        ours = float(loss(batch))
        # transformers' own loss over every position's logits, with the same labels.
        full = float(causal(input_ids=ids, attention_mask=mask, labels=labels).loss)
        everything = float(causal(input_ids=ids, attention_mask=mask, labels=torch.where(mask.bool(), ids, IGNORED)).loss)
    assert ours == pytest.approx(full, rel=1e-5)
    assert abs(ours - everything) > 1e-3  # the prompt's tokens would change it


def test_a_run_saves_an_adapter_repeats_exactly_and_resumes(tiny_model) -> None:
    steps = _Steps()
    whole, report = _train(tiny_model, "whole", steps)
    assert (whole.directory / ADAPTER_FILE).is_file() and whole.spec.version == 1
    assert report.steps == steps.steps == 4 and report.train_rows == 16 and report.skipped_rows == 0
    assert report.answer_tokens > 16 and all(np.isfinite(steps.losses))
    adapter = _adapter(whole)
    assert len(adapter) == 2 * 7 * 2  # A and B of every linear layer of both blocks
    assert all(np.abs(value).max() > 0 for key, value in adapter.items() if "lora_B" in key)

    again, _ = _train(tiny_model, "again")
    assert all(np.array_equal(adapter[key], value) for key, value in _adapter(again).items())

    with pytest.raises(KeyboardInterrupt):
        _train(tiny_model, "cut", _Steps(stop_after=3))  # the checkpoint of step 2 stays
    resumed, report = _train(tiny_model, "cut")
    assert report.resumed_at_step == 2
    assert all(np.allclose(adapter[key], value, atol=1e-6) for key, value in _adapter(resumed).items())


def test_llama_cpp_with_the_adapter_scores_the_answer_as_torch_does(tiny_gguf) -> None:
    import llama_cpp
    import torch

    model = LlamaModel(tiny_gguf, name="tiny")  # its own: the adapter stays with this model
    fitted, _ = _train(model, "scored")
    prompt = StructuredPrompt(fitted.spec, model)
    sequences = [training_sequence(prompt, text, fields) for text, fields in _rows(4, 2)]

    adapter = llama_cpp.llama_adapter_lora_init(model.ptr, str(fitted.directory / ADAPTER_FILE).encode())
    # K and V in float32: the default float16 cache alone moves the log-probs by ~1e-3.
    engine = Engine(model, EngineConfig(n_ctx=1024, n_threads=1, kv_type="f32"))
    try:
        llama_cpp.llama_set_adapters_lora(engine._ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter), 1,
                                          (ctypes.c_float * 1)(1.0))
        requests = [EvalRequest(s.tokens[:-1], logits_at=list(range(s.prompt_len - 1, len(s.tokens) - 1))) for s in sequences]
        results = engine.evaluate(requests)
    finally:
        engine.close()
    in_llama = []
    for sequence, result in zip(sequences, results, strict=True):
        rows = torch.log_softmax(torch.tensor(result.logits, dtype=torch.float64), dim=-1)
        in_llama.append(rows[torch.arange(len(rows)), torch.tensor(sequence.tokens[sequence.prompt_len :])].numpy())

    def in_torch(with_adapter: bool) -> list[np.ndarray]:
        causal, _ = load_model(tiny_gguf, language_model=True)
        if with_adapter:
            causal = add_lora(causal, LoraSettings(), seed=0)
            parameters = dict(causal.named_parameters())
            with torch.no_grad():
                for key, value in _adapter(fitted).items():
                    [name] = [n for n in parameters if n.endswith(key.replace(".weight", ".default.weight"))]
                    parameters[name].copy_(torch.tensor(value))
            causal = causal.get_base_model()
        loss = AnswerLoss(causal, "cpu")
        with torch.no_grad():
            out = []
            for sequence in sequences:
                logits, targets = loss.answer_logits([sequence])
                out.append(torch.log_softmax(logits.double(), dim=-1).gather(1, targets[:, None])[:, 0].numpy())
            return out

    tuned, base = np.concatenate(in_torch(True)), np.concatenate(in_torch(False))
    cpp = np.concatenate(in_llama)
    # float32 on both sides, different kernels: within 1e-4 nats per answer token (the base model
    # agrees to ~1e-5); the adapter itself moves them by far more.
    assert np.abs(cpp - tuned).max() < 1e-4
    assert np.abs(tuned - base).max() > 0.1


def test_the_gate_for_answers_wants_more_exact_fields_and_every_answer_valid() -> None:
    incumbent = MeasuredAnswers(1, field_exact_match=0.60, valid_rate=1.0, p50_ms=20.0)
    assert decide(MeasuredAnswers(2, 0.70, 1.0, 21.0), incumbent, rows=50, margin=0.01, max_latency_ratio=1.2).passed
    failed = decide(MeasuredAnswers(2, 0.605, 1.0, 20.0), incumbent, rows=50, margin=0.01, max_latency_ratio=1.2)
    assert not failed.passed and "field exact-match" in failed.reasons[0]
    invalid = decide(MeasuredAnswers(2, 0.90, 0.98, 20.0), incumbent, rows=50, margin=0.01, max_latency_ratio=1.2)
    assert not invalid.passed and "not valid" in " ".join(invalid.reasons)
    slow = decide(MeasuredAnswers(2, 0.90, 1.0, 30.0), incumbent, rows=50, margin=0.01, max_latency_ratio=1.2)
    assert "latency" in " ".join(slow.reasons)
    assert not decide(MeasuredAnswers(1, 0.9, 0.5, 1.0), None, rows=50, margin=0.0, max_latency_ratio=1.2).passed


def test_a_row_may_give_its_whole_answer(tmp_path) -> None:
    path = tmp_path / "dates.jsonl"
    path.write_text(json.dumps({"text": "March 3rd, 2024", "answer": "2024-03-03"}) + "\n"
                    + json.dumps({"text": "refund", "fields": {"action": "refund"}}) + "\n")
    data = load_file(path)
    assert data.kind == "extract"
    assert [ex.target for ex in data.examples] == ["2024-03-03", {"action": "refund"}]


def _write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps({"text": text, "fields": fields}) + "\n" for text, fields in rows))
    return str(path)


def test_train_method_lora_runs_an_extract_task_end_to_end(tiny_gguf, tmp_path) -> None:
    from typer.testing import CliRunner

    from workhorse.cli import app
    from workhorse.tasks.store import active_version, load_task

    task = tmp_path / "orders.yaml"
    task.write_text(TASK.format(name="orders", model=tiny_gguf))
    data, holdout = _write_rows(tmp_path / "train.jsonl", _rows(16, 3)), _write_rows(tmp_path / "holdout.jsonl", _rows(6, 4))
    result = CliRunner().invoke(app, ["train", str(task), "--data", data, "--holdout", holdout, "--method", "lora", "--json",
                                      "--epochs", "1", "--batch-size", "8", "--threads", "1", "--max-latency-ratio", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "orders" and report["version"] == 2 and report["lora"]["train_rows"] == 16
    gate = report["gate"]
    assert gate["incumbent"]["version"] == 1 and set(gate["candidate"]) == {"version", "field_exact_match", "valid_rate", "p50_ms"}
    spec, directory = load_task("orders", version=2)
    assert (directory / ADAPTER_FILE).is_file() and spec.schema_ == parse_task(task.read_text()).schema_
    assert active_version("orders") == (2 if report["promoted"] else 1)
    # The task file is stored now: it trains by name from here on; the head method is for classify tasks.
    with pytest.raises(TaskError):
        CliRunner().invoke(app, ["train", str(task), "--data", data, "--holdout", holdout, "--method", "lora"],
                           catch_exceptions=False)
    head = CliRunner().invoke(app, ["train", "orders", "--data", data, "--holdout", holdout])
    assert isinstance(head.exception, TaskError) and "--method lora" in head.exception.hint


@pytest.mark.real_model
# Qwen's template ends a turn with <|im_end|>; the built-in Gemma 3 has no template (a plain prompt): EOS.
@pytest.mark.parametrize(("name", "end"), [("qwen2.5-coder-0.5b", "<|im_end|>"), ("gemma3-270m", "<eos>")])
def test_a_chat_models_answer_ends_with_its_end_of_turn_token(real_model_path, name, end) -> None:
    from workhorse.tasks.store import load_task
    from workhorse.tasks.structured import answer_text

    model = LlamaModel(real_model_path(name), name=name)
    spec, _ = load_task("ticket-entities")
    shot = spec.examples[0]
    sequence = training_sequence(StructuredPrompt(spec, model), shot.input, shot.output)
    answer = sequence.tokens[sequence.prompt_len :]
    assert model.detokenize(answer[:-1]) == answer_text(spec, shot.output)
    assert model.detokenize(answer[-1:], special=True) == end
