"""Compare JSON-Schema-constrained decoding libraries on the built-in models' vocabularies.

    .venv/bin/python benchmarks/constrained_decoding.py [--models qwen2.5-coder-0.5b gemma3-270m]

Contenders, each fed the same vocabulary (every token's bytes from the GGUF, control tokens
marked special) and the same schemas:

- llguidance (what workhorse uses): `LLMatcher` + its numpy bitmask fill.
- xgrammar: `GrammarCompiler.compile_json_schema` + `GrammarMatcher.fill_next_token_bitmask`.
  It imports torch and transformers, which workhorse keeps out of its install; put them on a
  side path to include it, e.g.
      .venv/bin/pip install --target /tmp/xgr xgrammar==0.2.9 torch==2.13.0 transformers
      PYTHONPATH=/tmp/xgr .venv/bin/python benchmarks/constrained_decoding.py
- llama.cpp's GBNF sampler: llama-cpp-python's JSON-Schema → GBNF converter, then the low-level
  `llama_sampler_init_grammar` and `llama_sampler_apply` over a `llama_token_data_array` of the
  whole vocabulary (what llama.cpp does when it samples with a grammar).

Coverage: a schema counts as covered when it compiles, every valid document (compact JSON,
tokenized by the model's own tokenizer) is accepted token by token and may end there, and every
invalid one (each breaks the keyword under test) is refused at some token or at its end.

Timing: compile = schema → ready matcher (median of 3). Mask = time to compute the allowed set
before each token while walking the valid documents; advance = time to accept the token.

Overhead (`--overhead-model`, `--threads`, `--repeats`): workhorse's `JsonSchemaConstraint` in
real greedy generation: the same prompt generated with the constraint, then without it for the
same number of tokens; the difference per token against the plain decode step.

Absolute times on a shared 2-core machine are noisy; compare within one run. Under load, llama.cpp
with two threads slows badly (its threads spin on each other); `--threads 1` is steadier.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from workhorse.engine.model import LlamaModel, _llama
from workhorse.engine.vocab_bridge import SPECIAL_PREFIX, end_tokens, llg_tokenizer, token_table


# -- the schemas: (schema, valid documents, invalid documents) ------------------------------
def _doc(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


SCHEMAS: dict[str, tuple[dict, list, list]] = {
    "object, required + optional": (
        {
            "type": "object",
            "properties": {"user": {"type": "string"}, "port": {"type": "integer"}, "note": {"type": "string"}},
            "required": ["user", "port"],
            "additionalProperties": False,
        },
        [{"user": "root", "port": 22}, {"user": "admin", "port": 2222, "note": "from 10.0.0.1"}],
        [{"user": "root"}, {"user": "root", "port": "22"}],
    ),
    "enum": (
        {"type": "object", "properties": {"level": {"enum": ["info", "warn", "error"]}}, "required": ["level"],
         "additionalProperties": False},
        [{"level": "warn"}, {"level": "error"}],
        [{"level": "debug"}],
    ),
    "array, minItems/maxItems": (
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                                   "maxItems": 3}},
         "required": ["tags"], "additionalProperties": False},
        [{"tags": ["refund"]}, {"tags": ["card", "lost", "urgent"]}],
        [{"tags": []}, {"tags": ["a", "b", "c", "d"]}],
    ),
    "nested objects": (
        {
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"], "additionalProperties": False},
                    },
                    "required": ["name", "address"],
                    "additionalProperties": False,
                }
            },
            "required": ["customer"],
            "additionalProperties": False,
        },
        [{"customer": {"name": "Ana", "address": {"city": "Lyon"}}}],
        [{"customer": {"name": "Ana"}}],
    ),
    "string pattern + lengths": (
        {
            "type": "object",
            "properties": {
                "ticket": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                "summary": {"type": "string", "minLength": 3, "maxLength": 12},
            },
            "required": ["ticket", "summary"],
            "additionalProperties": False,
        },
        [{"ticket": "ABC-1234", "summary": "card lost"}],
        [{"ticket": "AB-1234", "summary": "card lost"}, {"ticket": "ABC-1234", "summary": "my card was lost"},
         {"ticket": "ABC-1234", "summary": "no"}],
    ),
    "numbers + ranges": (
        {
            "type": "object",
            "properties": {
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "latency": {"type": "number"},
            },
            "required": ["status", "latency"],
            "additionalProperties": False,
        },
        [{"status": 404, "latency": 12.5}, {"status": 200, "latency": -0.25}],
        [{"status": 700, "latency": 1}, {"status": 404, "latency": "fast"}],
    ),
    "anyOf": (
        {
            "type": "object",
            "properties": {
                "value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}, {"type": "null"}]},
            },
            "required": ["value"],
            "additionalProperties": False,
        },
        [{"value": 7}, {"value": "seven"}, {"value": None}],
        [{"value": True}, {"value": "far too long"}],
    ),
    "log line (combined)": (
        {
            "type": "object",
            "properties": {
                "timestamp": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"},
                "level": {"enum": ["DEBUG", "INFO", "WARN", "ERROR"]},
                "service": {"type": "string", "maxLength": 32},
                "user": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "ip": {"type": "string", "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$"},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            },
            "required": ["timestamp", "level", "service", "ip"],
            "additionalProperties": False,
        },
        [
            {"timestamp": "2024-03-01T12:00:07Z", "level": "ERROR", "service": "sshd", "user": "root",
             "ip": "203.0.113.9", "status": 401, "tags": ["auth", "failed"]},
            {"timestamp": "2024-03-01T12:00:09Z", "level": "INFO", "service": "nginx", "user": None,
             "ip": "10.1.2.3"},
        ],
        [{"timestamp": "yesterday", "level": "INFO", "service": "nginx", "ip": "10.1.2.3"},
         {"timestamp": "2024-03-01T12:00:09Z", "level": "INFO", "service": "nginx", "ip": "10.1.2"}],
    ),
}


# -- the contenders -------------------------------------------------------------------------
class Unsupported(Exception):
    pass


class Matcher:
    def mask(self) -> None: ...
    def allows(self, token: int) -> bool: ...
    def accept(self, token: int) -> bool: ...
    def close(self) -> None: ...


class Llguidance:
    name = "llguidance"

    def __init__(self, model: LlamaModel) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask

        self.llg = llguidance
        t0 = time.perf_counter()
        self.tokenizer = llg_tokenizer(model)
        self.setup_s = time.perf_counter() - t0
        self.bitmask = allocate_token_bitmask(1, self.tokenizer.vocab_size)
        from importlib.metadata import version

        self.version = version("llguidance")

    def compile(self, schema: dict) -> Matcher:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        matcher = self.llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise Unsupported(matcher.get_error())
        return _LlgMatcher(matcher, self.bitmask)


class _LlgMatcher(Matcher):
    def __init__(self, matcher, bitmask: np.ndarray) -> None:
        from llguidance.numpy import fill_next_token_bitmask

        self.matcher, self.bitmask, self.fill = matcher, bitmask, fill_next_token_bitmask

    def mask(self) -> None:
        self.fill(self.matcher, self.bitmask)

    def allows(self, token: int) -> bool:
        return bool((int(self.bitmask[0, token >> 5]) >> (token & 31)) & 1)

    def accept(self, token: int) -> bool:
        return self.matcher.consume_token(token)


class Xgrammar:
    name = "xgrammar"

    def __init__(self, model: LlamaModel) -> None:
        try:
            import xgrammar
        except ImportError as exc:
            raise Unsupported(f"not importable ({exc.name} missing; see this script's docstring)") from None
        self.xgr = xgrammar
        t0 = time.perf_counter()
        # Special tokens as empty strings: xgrammar then treats them as special (never text).
        vocab = [b"" if piece.startswith(SPECIAL_PREFIX) else piece for piece in token_table(model)]
        info = xgrammar.TokenizerInfo(vocab, xgrammar.VocabType.RAW, vocab_size=model.n_vocab,
                                      stop_token_ids=end_tokens(model))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        self.setup_s = time.perf_counter() - t0
        self.bitmask = np.full((1, (model.n_vocab + 31) // 32), -1, dtype=np.int32)
        from importlib.metadata import version

        self.version = version("xgrammar")

    def compile(self, schema: dict) -> Matcher:
        try:
            compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                         separators=(",", ":"), strict_mode=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not covered"
            raise Unsupported(str(exc).splitlines()[0]) from None
        return _XgrMatcher(self.xgr.GrammarMatcher(compiled), self.bitmask)


class _XgrMatcher(Matcher):
    def __init__(self, matcher, bitmask: np.ndarray) -> None:
        self.matcher, self.bitmask = matcher, bitmask

    def mask(self) -> None:
        self.matcher.fill_next_token_bitmask(self.bitmask)

    def allows(self, token: int) -> bool:
        return bool((int(self.bitmask[0, token >> 5]) >> (token & 31)) & 1)

    def accept(self, token: int) -> bool:
        return self.matcher.accept_token(token)


class Gbnf:
    name = "llama.cpp GBNF"

    def __init__(self, model: LlamaModel) -> None:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        self.llama_cpp = _llama()
        self.to_gbnf = json_schema_to_gbnf
        self.vocab = self.llama_cpp.llama_model_get_vocab(model.ptr)
        self.setup_s = 0.0
        n = model.n_vocab
        self.candidates = np.zeros(n, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self.candidates["id"] = np.arange(n)
        llama_cpp = self.llama_cpp
        data = ctypes.cast(self.candidates.ctypes.data, ctypes.POINTER(llama_cpp.llama_token_data))
        self.array = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        from importlib.metadata import version

        self.version = f"(llama-cpp-python {version('llama_cpp_python')})"

    def compile(self, schema: dict) -> Matcher:
        try:
            grammar = self.to_gbnf(json.dumps(schema))
        except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions
            raise Unsupported(f"converter: {exc}") from None
        # llama.cpp prints a refused grammar in full on stderr; keep the table readable.
        sys.stderr.flush()
        saved_fd, saved_stream = os.dup(2), sys.stderr
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        sys.stderr = io.StringIO()
        try:
            sampler = self.llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            os.close(devnull)
            sys.stderr = saved_stream
        if not sampler:
            raise Unsupported("llama.cpp could not parse the converted grammar")
        return _GbnfMatcher(self, sampler)


class _GbnfMatcher(Matcher):
    def __init__(self, owner: Gbnf, sampler) -> None:
        self.owner, self.sampler = owner, sampler

    def mask(self) -> None:
        owner = self.owner
        owner.candidates["logit"] = 0.0
        owner.array.size, owner.array.selected, owner.array.sorted = len(owner.candidates), -1, False
        owner.llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(owner.array))

    def allows(self, token: int) -> bool:
        return bool(np.isfinite(self.owner.candidates["logit"][token]))

    def accept(self, token: int) -> bool:
        # llama.cpp aborts on a token its grammar refuses, so only allowed tokens get here.
        self.owner.llama_cpp.llama_sampler_accept(self.sampler, token)
        return True

    def close(self) -> None:
        self.owner.llama_cpp.llama_sampler_free(self.sampler)


# -- measuring ------------------------------------------------------------------------------
@dataclass
class Result:
    covered: dict[str, str] = field(default_factory=dict)  # schema → "ok" or why not
    compile_ms: list[float] = field(default_factory=list)
    mask_us: dict[str, list[float]] = field(default_factory=dict)  # schema → per-token times
    advance_us: list[float] = field(default_factory=list)

    def masks(self, schemas=None) -> list[float]:
        return [t for name, times in self.mask_us.items() if schemas is None or name in schemas for t in times]


def walk(matcher: Matcher, tokens: list[int], end: int, mask_us: list[float] | None, advance_us: list[float]) -> bool:
    """Feed `tokens`; True when every one was allowed and the document may end after them."""
    for token in tokens:
        t0 = time.perf_counter()
        matcher.mask()
        t1 = time.perf_counter()
        if not matcher.allows(token):
            return False
        t2 = time.perf_counter()
        ok = matcher.accept(token)
        t3 = time.perf_counter()
        if not ok:
            return False
        if mask_us is not None:
            mask_us.append((t1 - t0) * 1e6)
            advance_us.append((t3 - t2) * 1e6)
    matcher.mask()
    return matcher.allows(end)


def measure(backend, model: LlamaModel) -> Result:
    result = Result()
    end = end_tokens(model)[0]
    for name, (schema, valid, invalid) in SCHEMAS.items():
        times, matcher = [], None
        try:
            for _ in range(3):
                t0 = time.perf_counter()
                matcher = backend.compile(schema)
                times.append((time.perf_counter() - t0) * 1e3)
                matcher.close()
        except Unsupported as exc:
            result.covered[name] = f"no: {exc}"[:60]
            continue
        result.compile_ms.append(statistics.median(times))
        verdict = "ok"
        for value in valid:
            matcher = backend.compile(schema)
            tokens = model.tokenize(_doc(value), add_special=False)
            if not walk(matcher, tokens, end, result.mask_us.setdefault(name, []), result.advance_us):
                verdict = f"refuses valid {_doc(value)}"
            matcher.close()
        for value in invalid:
            matcher = backend.compile(schema)
            if walk(matcher, model.tokenize(_doc(value), add_special=False), end, None, []):
                verdict = f"accepts invalid {_doc(value)}"
            matcher.close()
        result.covered[name] = verdict[:60]
    return result


# -- the cost inside generation -------------------------------------------------------------
OVERHEAD_LINES = [
    "Mar 12 10:01:44 web1 sshd[2212]: Failed password for root from 203.0.113.9 port 52114 ssh2",
    "Mar 12 10:02:10 web1 sshd[2240]: Accepted publickey for deploy from 10.0.4.17 port 40022 ssh2",
    "Mar 12 10:03:51 db2 sshd[981]: Invalid user oracle from 198.51.100.23 port 61001",
]


class _Timed:
    """Wraps a constraint and adds up the time spent in it."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def allowed_tokens(self):
        t0 = time.perf_counter()
        try:
            return self.inner.allowed_tokens()
        finally:
            self.seconds += time.perf_counter() - t0

    def advance(self, token: int) -> None:
        t0 = time.perf_counter()
        self.inner.advance(token)
        self.seconds += time.perf_counter() - t0

    def is_finished(self) -> bool:
        return self.inner.is_finished()


def overhead(model_name: str, repeats: int, n_threads: int) -> None:
    """Greedy generation of the same tokens with and without a JSON-schema constraint."""
    from workhorse.engine import Engine, EngineConfig, GenerateRequest, SamplingParams, generate
    from workhorse.engine.constraints import JsonSchemaConstraint
    from workhorse.models import resolve

    schema = SCHEMAS["log line (combined)"][0]
    schema = {**schema, "required": list(schema["properties"])}
    model = LlamaModel(resolve(model_name).path, name=model_name)
    engine = Engine(model, EngineConfig(n_ctx=2048, n_slots=4, prefix_slots=0, n_threads=n_threads))
    llg_tokenizer(model)  # built once per model; not part of a request
    prompts = [model.tokenize(model.apply_chat_template([
        {"role": "system", "content": "Extract the fields of the log line as JSON."},
        {"role": "user", "content": line}]), parse_special=True) for line in OVERHEAD_LINES]

    def timed(request) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        [result] = generate(engine, [request])
        return time.perf_counter() - t0, result.tokens

    plain_ms, constrained_ms, inside_us, step_ms, n_tokens = [], [], [], [], []
    for _ in range(repeats):
        for prompt in prompts:
            t_prompt, _ = timed(GenerateRequest(prompt, SamplingParams(max_tokens=1)))
            constraint = _Timed(JsonSchemaConstraint(model, schema))
            t_constrained, tokens = timed(GenerateRequest(prompt, SamplingParams(max_tokens=200), constraint=constraint))
            n = len(tokens)
            t_plain, plain = timed(GenerateRequest(prompt, SamplingParams(max_tokens=n, ignore_eos=True)))
            assert len(plain) == n
            n_tokens.append(n)
            step_ms.append((t_plain - t_prompt) / (n - 1) * 1e3)
            plain_ms.append(t_plain / n * 1e3)
            constrained_ms.append(t_constrained / n * 1e3)
            inside_us.append(constraint.seconds / n * 1e6)
    engine.close()
    extra = [(c - p) for c, p in zip(constrained_ms, plain_ms)]
    step = statistics.median(step_ms)
    print(f"\nOverhead on {model_name} ({model.n_vocab:,} tokens, greedy, batch 1, {n_threads} threads, "
          f"{len(n_tokens)} runs of {min(n_tokens)}-{max(n_tokens)} tokens; medians)")
    print("| decode step ms/token | constrained − plain ms/token | of which in the constraint µs/token | overhead |")
    print("|---|---|---|---|")
    print(f"| {step:.1f} | {statistics.median(extra):+.2f} (spread {min(extra):+.2f}…{max(extra):+.2f}) "
          f"| {statistics.median(inside_us):.0f} | {statistics.median(extra) / step:+.1%} "
          f"(constraint alone {statistics.median(inside_us) / 1e3 / step:.1%}) |")


def _fmt_us(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.mean(values):,.0f} (p95 {np.percentile(values, 95):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "gemma3-270m"])
    parser.add_argument("--overhead-model", default="qwen2.5-coder-0.5b", help="'' skips the generation overhead run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from workhorse.models import resolve

    coverage: dict[str, dict[str, str]] = {}  # library → schema → verdict
    rows = []
    for model_name in args.models:
        model = LlamaModel(resolve(model_name).path, name=model_name)
        results = []
        for factory in (Llguidance, Xgrammar, Gbnf):
            try:
                backend = factory(model)
            except Unsupported as exc:
                print(f"{factory.name}: skipped, {exc}")
                continue
            result = measure(backend, model)
            results.append((backend, result))
            column = coverage.setdefault(f"{factory.name} {backend.version}", {})
            for schema, verdict in result.covered.items():
                if schema in column and column[schema] != verdict:
                    verdict = f"{column[schema]}; {model_name}: {verdict}"
                column[schema] = verdict
        # Mask times over the schemas every library walked, so the means compare like with like.
        common = set.intersection(*(set(r.mask_us) for _, r in results)) if results else set()
        for backend, result in results:
            rows.append((model_name, f"{model.n_vocab:,}", backend.name,
                         f"{sum(v == 'ok' for v in result.covered.values())}/{len(SCHEMAS)}",
                         f"{backend.setup_s * 1e3:,.0f}",
                         f"{statistics.median(result.compile_ms):,.2f}" if result.compile_ms else "–",
                         _fmt_us(result.masks()), _fmt_us(result.masks(common)), _fmt_us(result.advance_us)))
        model.close()

    if rows:
        print_tables(coverage, rows)
    if args.overhead_model:
        overhead(args.overhead_model, args.repeats, args.threads)


def print_tables(coverage: dict[str, dict[str, str]], rows: list[tuple]) -> None:
    print("\nSchema coverage (ok: compiles, accepts the valid documents, refuses the invalid ones)")
    names = list(coverage)
    print(f"| schema | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for schema in SCHEMAS:
        print(f"| {schema} | {' | '.join(coverage[n].get(schema, '–') for n in names)} |")
    print("\nSpeed (compile: median over schemas; mask, advance: mean (p95) µs per token over the valid documents;"
          "\n'common': only the schemas every library compiled)")
    print("| model | vocab | library | covered | vocab setup ms | compile ms | mask µs/token | mask µs, common "
          "| advance µs/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
