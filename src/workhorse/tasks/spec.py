"""Task specs: what a user writes in a task YAML file, validated by pydantic.

A task is declarative: its kind, the model that does the work, the instructions and the
labels, schema or target format, and examples. Trained parts (a classification head) are stored
beside the spec under the same version.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TaskKind = Literal["classify", "extract", "convert", "embed", "logs"]
ClassifyMode = Literal["descriptions", "examples", "score", "head"]

DEFAULT_FEATURE_PROMPT = 'This message: "{text}" means in one word: "'
DEFAULT_SCORE_TEMPERATURE = 0.75  # minimises ECE on bitext_cs validation (contextual calibration)
DEFAULT_DESCRIPTIONS_TEMPERATURE = 0.04  # minimises ECE on bitext_cs validation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelSpec(_Strict):
    name: str = Field(min_length=1, description="The label as it appears in answers.")
    description: str = Field("", description="What the label means; shown to the model in score mode.")
    examples: list[str] = Field(default_factory=list, description="Example inputs with this label.")


class Example(_Strict):
    input: str
    output: Any = Field(description="The expected answer: a label, a JSON object, or a string.")


class OutOfScope(_Strict):
    label: str = Field("oos", description="The answer given when the task abstains.")
    detector: Literal["confidence", "neighbours"] = Field(
        "confidence",
        description="`confidence`: abstain below a top probability; `neighbours` (set by `fit --validation`): "
        "abstain below a typicality that joins the confidence with the similarity to the nearest training items.",
    )
    threshold: float = Field(
        0.0, ge=0, le=1, description="Abstain when the detector's score (probability or typicality) is below this."
    )
    min_recall: float | None = Field(
        None, gt=0, lt=1,
        description="The out-of-scope recall the threshold keeps: chosen on validation rows as the best in-scope "
        "accuracy whose recall is at least this at 95 % confidence (`fit --oos-recall`, `tasks abstain`; a new "
        "version keeps it). None: the threshold maximises the mean of in-scope accuracy and out-of-scope recall.",
    )


class ClassifyOptions(_Strict):
    mode: ClassifyMode | None = Field(
        None,
        description="`descriptions` (zero-shot): an item gets the label whose name and description (and examples, if "
        "any) are nearest in the model's features; `examples`: a head fitted, when the task loads, on the labels' "
        "examples (a few per label, no `fit`); `score` (zero-shot): the model scores each label's name after the item "
        "(slower); `head`: a head trained by `fit`. Default: `examples` when every label has examples, otherwise "
        "`descriptions`.",
    )
    descriptions_temperature: float = Field(
        DEFAULT_DESCRIPTIONS_TEMPERATURE, gt=0,
        description="Descriptions mode: cosines are divided by this before the softmax; larger values give lower, "
        "more cautious confidences. The default minimised ECE on bitext_cs validation.",
    )
    score_calibration: Literal["contextual", "none"] = Field(
        "contextual",
        description="Score mode: `contextual` divides the label probabilities by their distribution on content-free "
        "inputs (\"\", \"N/A\", \"[MASK]\"), removing the prompt's prior toward some labels; `none` keeps it.",
    )
    score_length_norm: bool = Field(
        False, description="Score mode: average a label's log-probability over its tokens instead of summing it."
    )
    score_temperature: float = Field(
        DEFAULT_SCORE_TEMPERATURE, gt=0,
        description="Score mode: label scores are divided by this before the softmax; above 1 the confidence "
        "shrinks toward uniform. The default minimised ECE on bitext_cs validation; raise it where answers "
        "should escalate more readily.",
    )
    feature_prompt: str = Field(
        DEFAULT_FEATURE_PROMPT,
        description="Wraps each item for feature extraction; `{text}` marks the item. Its fixed part is a cached prefix.",
    )
    pooling: Literal["last", "last+mean"] | None = Field(
        None,
        description="Features: the last token's state, or that joined by the mean over the item's own tokens. "
        "Default: `last+mean` in descriptions mode, `last` otherwise.",
    )
    layers: list[int] = Field(
        default_factory=list, description="Intermediate layers whose last-token states are added to the features."
    )
    multi_label: bool = Field(False, description="Return every label whose probability reaches `threshold`.")
    threshold: float = Field(0.5, ge=0, le=1, description="Per-label threshold for multi-label answers.")
    out_of_scope: OutOfScope | None = Field(None, description="Abstain with a fixed label below a confidence.")

    @property
    def features_pooling(self) -> Literal["last", "last+mean"]:
        """`pooling`, or the default for the mode."""
        return self.pooling or ("last+mean" if self.mode == "descriptions" else "last")

    @field_validator("feature_prompt")
    @classmethod
    def _has_one_slot(cls, value: str) -> str:
        if value.count("{text}") != 1:
            raise ValueError("must contain `{text}` exactly once")
        return value


class EmbedOptions(_Strict):
    pooling: Literal["mean", "last"] = "mean"
    dimensions: int | None = Field(None, ge=1, description="Truncate vectors to this many dimensions.")
    normalize: bool = True


class UpstreamOptions(_Strict):
    base_url: str = Field(
        description="An OpenAI-compatible API, e.g. https://api.openai.com/v1 or a local server. Plain http only "
        "to a loopback address (localhost, 127.0.0.0/8, ::1) unless `allow_insecure` says otherwise."
    )
    model: str = Field(description="The upstream model's name.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    allow_insecure: bool = Field(
        False,
        description="Allow plain http to a host other than loopback. The API key and the (redacted) items then "
        "cross the network readable by anyone on the path: only for a trusted network.",
    )
    timeout_s: float = Field(
        20.0, gt=0,
        description="Time budget of an escalated item, counted from when its request arrived: the local answer, "
        "retries and backoff included. When it is spent, the small model's answer is returned.",
    )
    retries: int = Field(2, ge=0, description="Retries after a timeout, a connection error, 429/5xx or an answer off the schema.")
    backoff_s: float = Field(0.25, ge=0, description="Pause before the first retry; it doubles with each one.")
    breaker_failures: int = Field(5, ge=1, description="Failed calls in a row that pause calls to this upstream.")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="How long calls stay paused before one is tried again.")

    @model_validator(mode="after")
    def _safe_transport(self) -> UpstreamOptions:
        problem = self.transport_problem()
        if problem is not None:
            raise ValueError(problem)
        return self

    def transport_problem(self) -> str | None:
        """Why `base_url` may not be used as it is, or None. Checked when the options are read and
        again by the client, since a copy made with `model_copy(update=…)` skips validation."""
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return f"base_url {self.base_url!r} must be an http(s) URL with a host"
        if url.scheme == "http" and not (is_loopback(url.hostname) or self.allow_insecure):
            return (f"base_url {self.base_url!r} is plain http to a host that is not loopback: the API key and the "
                    "items would cross the network unencrypted; use https, or set `allow_insecure: true`")
        return None


def is_loopback(host: str) -> bool:
    """localhost or a loopback address: traffic that never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


class EscalationOptions(_Strict):
    mode: Literal["never", "always", "threshold"] = Field(
        "never", description="`threshold`: escalate answers whose confidence is below `threshold`."
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Set by hand, or calibrated for a target escalation rate.")
    target_rate: float | None = Field(
        None, gt=0, lt=1, description="The escalation rate `threshold` was calibrated for on a labelled dev set."
    )
    on_invalid: bool = Field(True, description="Escalate an output that failed validation.")
    labels: list[str] = Field(default_factory=list, description="Escalate answers with these labels.")
    max_input_chars: int | None = Field(None, ge=1, description="Escalate inputs longer than this.")
    out_of_scope: bool = Field(False, description="Escalate items the classifier abstained on.")
    privacy: Literal["local_only", "redact", "allow"] = Field(
        "redact",
        description="`redact`: secrets and personal data become placeholders before leaving the machine; "
        "`local_only`: nothing leaves; `allow`: sent as is.",
    )
    upstream: UpstreamOptions | None = None

    @model_validator(mode="after")
    def _has_an_upstream(self) -> EscalationOptions:
        if self.mode != "never" and self.upstream is None:
            raise ValueError(f"escalation mode {self.mode!r} needs an `upstream` (base_url, model)")
        return self


class ServeOptions(_Strict):
    deadline_ms: float | None = Field(
        None, gt=0, description="Deadline of a served request that sends no X-Deadline-Ms (default: the server's)."
    )
    fallback: Any = Field(
        None, description="Answer given (flagged `fallback`) when the deadline passes; without one the server answers 504."
    )


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Lowercase letters, digits, `-`, `_`, `.`.")
    kind: TaskKind
    version: int = Field(1, ge=1)
    model: str = Field("gemma3-270m", description="A built-in model name, a .gguf path or hf:OWNER/REPO/FILE.gguf.")
    description: str = ""
    language: str = "en"
    instructions: str = ""
    labels: list[LabelSpec] = Field(default_factory=list)
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="JSON Schema of the answer (extract).")
    target: str | None = Field(None, description="Target format of a convert task: json, csv, yaml or value.")
    examples: list[Example] = Field(default_factory=list)
    log_format: str | None = Field(
        None, description="A logs task's header format, e.g. `<Date> <Time> <Level> <Component>: <Content>`; "
        "without it the header is detected from the first lines."
    )
    log_ports: Literal["with-address", "apart"] = Field(
        "with-address", description="A logs task's convention for an address with its port: one value "
        "(`<*>`, the default) or two (`<*>:<*>`)."
    )
    log_ask_model: bool = Field(
        False, description="Whether a logs task asks its model for the template of a line no other line of its block "
        "resembles. Off, the rules and the evidence of other lines decide: as accurate on systems the rules were not "
        "chosen on, and 50-100x faster on a new system (docs/logs.md)."
    )
    classify: ClassifyOptions = Field(default_factory=ClassifyOptions)
    embed: EmbedOptions = Field(default_factory=EmbedOptions)
    serve: ServeOptions = Field(default_factory=lambda: ServeOptions())
    escalation: EscalationOptions = Field(default_factory=lambda: EscalationOptions())

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _fits_its_kind(self) -> TaskSpec:
        if self.kind == "classify":
            if len(self.labels) < 2:
                raise ValueError("a classify task needs at least two labels")
            names = [label.name for label in self.labels]
            if len(set(names)) != len(names):
                raise ValueError("label names must be unique")
            without = [name for name, texts in self.examples_by_label().items() if not texts]
            if self.classify.mode is None:
                self.classify.mode = "descriptions" if without else "examples"
            if self.classify.mode == "examples" and without:
                raise ValueError(f"examples mode needs examples for every label; these have none: {', '.join(without)}")
        if self.kind == "extract" and not self.schema_:
            raise ValueError("an extract task needs a `schema` (JSON Schema of the answer)")
        if self.kind == "convert" and not (self.target or self.schema_):
            raise ValueError("a convert task needs a `target` format or a `schema`")
        return self

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def in_dataset_terms(self, answer: Any, oos_label: str | None) -> Any:
        """`answer` as a labelled dataset names it: the task's abstention label stands for the
        dataset's out-of-scope label (clinc150's `oos`), whatever the task calls it."""
        abstains = self.classify.out_of_scope
        return oos_label if oos_label and abstains and answer == abstains.label else answer

    def examples_by_label(self) -> dict[str, list[str]]:
        """Every label's example inputs: its own `examples`, then the task's examples whose output is that label."""
        by_label = {label.name: list(label.examples) for label in self.labels}
        for example in self.examples:
            if isinstance(example.output, str) and example.output in by_label:
                by_label[example.output].append(example.input)
        return by_label

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "model": self.model,
        }
