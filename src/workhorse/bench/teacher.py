"""A perfect teacher for benchmarks: an OpenAI-compatible chat endpoint on loopback that answers
each item with its gold label.

The pipeline asks it exactly as it would ask a hosted model — over HTTP, through the upstream
client, with the item redacted under the task's privacy policy — so the teacher recognises an item
by what arrives: its text as given, else its text normalised, else its redacted text (what the
pipeline sends when the redactor found something in it). An item it cannot place is answered with
HTTP 422 and counted as a miss; the pipeline then keeps the small model's answer.

    with GoldTeacher({"where is my card": "card_arrival"}, privacy="redact") as teacher:
        options = teacher.upstream_options()   # base_url http://127.0.0.1:PORT/v1, model "gold"
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workhorse.flywheel.split import normalise
from workhorse.privacy import PrivacyPolicy, Redactor
from workhorse.tasks.spec import UpstreamOptions

TEACHER_MODEL = "gold"
CHARS_PER_TOKEN = 4  # the usage it reports: an estimate, as it has no tokenizer of a hosted model


@dataclass
class TeacherStats:
    requests: int = 0
    answered: int = 0
    by_normalised: int = 0  # placed by the normalised text (the exact text did not match)
    by_redacted: int = 0  # placed by the redacted text (the redactor had changed it)
    ambiguous: int = 0  # a key that several gold labels share: the most common one was given
    missed: int = 0  # not placed: answered with 422

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class GoldTeacher:
    def __init__(self, gold: Mapping[str, str], *, privacy: PrivacyPolicy = "redact", task: str | None = None) -> None:
        self.stats = TeacherStats()
        self._lock = threading.Lock()
        self._privacy = privacy
        self._task = task
        self._exact: dict[str, Counter[str]] = {}
        self._normalised: dict[str, Counter[str]] = {}
        for text, label in gold.items():
            self._exact.setdefault(text, Counter())[label] += 1
            self._normalised.setdefault(normalise(text), Counter())[label] += 1
        self._redacted: dict[str, Counter[str]] | None = None  # built on the first miss: most items are not redacted
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> GoldTeacher:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gold-teacher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the teacher with `with GoldTeacher(...)`"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def upstream_options(self, **settings: Any) -> UpstreamOptions:
        """A task's `escalation.upstream` pointing at this teacher."""
        return UpstreamOptions(base_url=self.url, model=TEACHER_MODEL, api_key_env=None, **settings)

    # -- answering -----------------------------------------------------------------------------
    def label_for(self, sent: str) -> str | None:
        """The gold label of the item whose (possibly redacted) text was sent, or None."""
        with self._lock:
            self.stats.requests += 1
            labels = self._exact.get(sent)
            if labels is None:
                labels = self._normalised.get(normalise(sent))
                if labels is not None:
                    self.stats.by_normalised += 1
            if labels is None:
                labels = self._redacted_index().get(normalise(sent))
                if labels is not None:
                    self.stats.by_redacted += 1
            if labels is None:
                self.stats.missed += 1
                return None
            self.stats.answered += 1
            self.stats.ambiguous += len(labels) > 1
            return labels.most_common(1)[0][0]

    def _redacted_index(self) -> dict[str, Counter[str]]:
        if self._redacted is None:
            self._redacted = {}
            if self._privacy == "redact":
                for text, labels in self._exact.items():
                    # One redactor per item, as the pipeline uses: the same text gets the same placeholders.
                    [redacted], _ = Redactor(self._privacy, task=self._task).prepare([text])
                    if redacted != text:
                        self._redacted.setdefault(normalise(redacted), Counter()).update(labels)
        return self._redacted


def _handler(teacher: GoldTeacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                messages = body["messages"]
                sent = messages[-1]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                return self._send(400, {"error": {"message": "expected a chat completion request"}})
            label = teacher.label_for(sent)
            if label is None:
                return self._send(422, {"error": {"message": "the teacher has no gold label for this item"}})
            content = json.dumps({"label": label})
            prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
            self._send(200, {
                "id": "gold", "object": "chat.completion", "model": TEACHER_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": math.ceil(prompt_chars / CHARS_PER_TOKEN),
                          "completion_tokens": math.ceil(len(content) / CHARS_PER_TOKEN)},
            })

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass  # stderr carries the benchmark's progress, not a line per request

    return Handler
