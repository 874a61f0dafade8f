"""The console at `/ui`: server-rendered pages (Jinja2) over the call log and the task store.

No second server and nothing fetched from elsewhere: the pages, one stylesheet and one small
script ship in the package; charts are inline SVG drawn here. Reads run in a worker thread on
their own read connection (WAL readers never wait for the call log's writer)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from workhorse.calllog.prices import PriceTable
from workhorse.calllog.totals import CallTotals, corrected_answer
from workhorse.errors import WorkhorseError
from workhorse.serve.call_routes import Feedback, record_correction
from workhorse.serve.console import queries
from workhorse.serve.console.access import COOKIE, SESSION_S, ConsoleAccess, Session
from workhorse.serve.console.charts import lines, stacked_bars
from workhorse.serve.errors import ApiError
from workhorse.tasks.spec import is_loopback

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t else ""
templates.env.filters["short"] = lambda v, n=120: (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))[:n]
def _loopback_unless_keys(request: Request) -> None:
    """Without API keys nobody has to sign in, so the console answers only this machine: a server
    bound to the network without keys (which `workhorse serve` warns about) keeps its console shut."""
    if _access(request).needs_key:
        return
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise ApiError(403, "the console answers only this machine when the server has no API keys: "
                            "set api_keys to use it from elsewhere")


router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(_loopback_unless_keys)])
RANGES = {"24h": 24 * 3600, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}
SOURCES = ("local", "upstream", "fallback")
MAX_BARS = 48


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def _access(request: Request) -> ConsoleAccess:
    return request.app.state.console_access


def _session(request: Request) -> Session:
    """The visitor's session: with API keys, only after signing in; without, one is handed out."""
    access = _access(request)
    session = access.read(request.cookies.get(COOKIE))
    if session is not None:
        return session
    if access.needs_key:
        raise _Redirect("/ui/login?" + urlencode({"next": _local_path(str(request.url.path))}))
    session, cookie = access.issue("console")
    request.state.new_cookie = cookie
    return session


def _changing(request: Request, token: str | None) -> Session:
    """The session of a state-changing request, which must carry its CSRF token (403 otherwise)."""
    session = _access(request).read(request.cookies.get(COOKIE))
    if session is None:
        raise ApiError(401, "sign in to the console first (/ui/login)")
    if not _access(request).csrf_ok(session, token):
        raise ApiError(403, "missing or wrong CSRF token: reload the page and try again")
    return session


def _page(request: Request, name: str, session: Session, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {
        "who": session.who, "csrf": _access(request).csrf_token(session), "needs_key": _access(request).needs_key, **context,
    })
    cookie = getattr(request.state, "new_cookie", None)
    if cookie is not None:
        _set_cookie(request, response, cookie)
    return response


def _set_cookie(request: Request, response: Response, cookie: str) -> None:
    response.set_cookie(COOKIE, cookie, max_age=SESSION_S, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def _read(request: Request, work, *args, **kwargs):
    """Run a query on a read connection of the call log, off the event loop."""
    log = request.app.state.workhorse.call_log
    if log is None:
        raise ApiError(404, "the call log is off on this server (log_calls: false): the console has nothing to show")

    def run():
        with log.reading() as connection:
            return work(connection, *args, **kwargs)

    return await asyncio.to_thread(run)


def install(app) -> None:
    """Add the console to the app: its pages, its static files and its redirect to sign in."""
    from fastapi.staticfiles import StaticFiles

    settings = app.state.settings
    secret = settings.console_secret.get_secret_value().encode() if settings.console_secret else None
    app.state.console_access = ConsoleAccess(settings.api_key_values(), secret)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(_Redirect)
    async def redirect(request: Request, error: _Redirect) -> Response:
        return RedirectResponse(error.url, status_code=303)


# -- signing in ---------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/ui") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _local_path(next), "needs_key": _access(request).needs_key,
                                                              "error": None, "who": None})


@router.post("/login")
async def login(request: Request, key: str = Form(""), name: str = Form(""), next: str = Form("/ui")) -> Response:
    access = _access(request)
    if access.needs_key and not access.key_matches(key):
        return templates.TemplateResponse(request, "login.html", {"next": _local_path(next), "needs_key": True, "who": None,
                                                                  "error": "That key is not one of this server's API keys."},
                                          status_code=401)
    _, cookie = access.issue(name)
    response = RedirectResponse(_local_path(next), status_code=303)
    _set_cookie(request, response, cookie)
    return response


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("")) -> Response:
    _changing(request, csrf)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _local_path(target: str) -> str:
    """Only a path on this server may follow signing in (no open redirect)."""
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


# -- overview -----------------------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
async def overview(request: Request, range: str = Query("7d", pattern="^(24h|7d|30d|all)$"),
                   task: str | None = None) -> Response:
    session = _session(request)
    span = RANGES[range]
    since = time.time() - span if span else None
    data = await _read(request, queries.overview, since=since, task=task or None)
    names = await _read(request, queries.task_names)
    prices = _prices()
    rows = [{"task": name, "version": version, **totals.report(prices)} for (name, version), totals in data.by_version.items()]
    total = data.total.report(prices)
    labels, per_bar = _bars(data.by_hour, since)
    charts = [
        stacked_bars("Calls, by who answered", labels,
                     {source: [t.sources.get(source, 0) for t in per_bar] for source in SOURCES}),
        lines("Escalation rate", labels, {"escalated": [t.escalated / t.calls if t.calls else None for t in per_bar]}, top=1.0),
        lines("Latency (ms)", labels, {"p50": [t.latency_percentile(0.5) for t in per_bar],
                                       "p99": [t.latency_percentile(0.99) for t in per_bar]}),
    ]
    return _page(request, "overview.html", session, rows=rows, total=total, charts=charts, range=range, ranges=list(RANGES),
                 task=task or "", task_names=names)


def _bars(by_hour: dict[int, CallTotals], since: float | None) -> tuple[list[str], list[CallTotals]]:
    """The period in at most `MAX_BARS` bars of whole hours (an hour, four, a day…), oldest first,
    empty ones included so that gaps show as gaps."""
    now = int(time.time() // 3600)
    first = int(since // 3600) if since is not None else min(by_hour, default=now)
    span = max(now, max(by_hour, default=now)) - first + 1
    width = next(hours for hours in (1, 2, 4, 6, 12, 24, 48, 168, 720, 8760) if span / hours <= MAX_BARS or hours == 8760)
    start = first - first % width
    bars = [CallTotals() for _ in range((first + span - start + width - 1) // width)]
    for hour, totals in by_hour.items():
        if hour >= start:
            bars[(hour - start) // width].merge(totals)
    form = "%m-%d %H:00" if width < 24 else "%Y-%m-%d"
    labels = [datetime.fromtimestamp((start + i * width) * 3600, UTC).strftime(form) for i in range(len(bars))]
    return labels, bars


def _prices() -> PriceTable:
    from workhorse.paths import prices_path

    return PriceTable.load(prices_path())


# -- calls --------------------------------------------------------------------------------------
@router.get("/calls", response_class=HTMLResponse)
async def calls(request: Request, task: str = "", version: str = "", source: str = "", min_confidence: str = "",
                max_confidence: str = "", feedback: str = "", since: str = "", until: str = "", text: str = "",
                before: int | None = Query(None, ge=1)) -> Response:
    session = _session(request)
    try:
        chosen = queries.CallFilter(
            task=task or None, version=_number(version, int, "version"), source=source or None,
            min_confidence=_number(min_confidence, float, "min confidence"),
            max_confidence=_number(max_confidence, float, "max confidence"),
            feedback={"yes": True, "no": False}.get(feedback), since=_instant(since, "from"), until=_instant(until, "to"),
            text=text or None,
        )
    except ValueError as error:
        raise ApiError(422, str(error)) from None
    page, next_before = await _read(request, queries.list_calls, chosen, before=before)
    names = await _read(request, queries.task_names)
    form = {"task": task, "version": version, "source": source, "min_confidence": min_confidence,
            "max_confidence": max_confidence, "feedback": feedback, "since": since, "until": until, "text": text}
    next_url = "/ui/calls?" + urlencode({**{k: v for k, v in form.items() if v}, "before": next_before}) if next_before else None
    return _page(request, "calls.html", session, calls=page, form=form, next_url=next_url, task_names=names,
                 sources=SOURCES, first_page=before is None)


def _number(text: str, kind: type, name: str):
    if not text.strip():
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None


def _instant(text: str, name: str) -> float | None:
    """A `datetime-local` value (or ISO date), read as UTC."""
    if not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date and time such as 2026-12-01T09:30, not {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get("/calls/{call_id}", response_class=HTMLResponse)
async def call(request: Request, call_id: int) -> Response:
    session = _session(request)
    row = await _read(request, queries.get_call, call_id)
    if row is None:
        raise ApiError(404, f"no call with id {call_id}")
    return _page(request, "call.html", session, call=row, alternatives=_alternatives(row), pretty=_pretty)


def _alternatives(call: dict[str, Any]) -> list[tuple[str, float]]:
    probabilities = (call.get("details") or {}).get("probabilities") or {}
    return sorted(((label, float(p)) for label, p in probabilities.items()), key=lambda item: -item[1])


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) if not isinstance(value, str) else value


# -- review queue -------------------------------------------------------------------------------
@router.get("/review", response_class=HTMLResponse)
async def review_index(request: Request) -> Response:
    session = _session(request)
    names = await _read(request, queries.task_names)
    reviewable = await asyncio.to_thread(_of_kinds, request.app.state.workhorse, names, ("classify", "extract", "convert"),
                                         unknown=True)
    return _page(request, "review_index.html", session, task_names=reviewable)


@router.get("/review/{task}", response_class=HTMLResponse)
async def review(request: Request, task: str, mode: str = Query("confidence", pattern="^(confidence|escalated|disagreement)$"),
                 skip: str = "") -> Response:
    session = _session(request)
    skipped = frozenset(int(part) for part in skip.split(",") if part.strip().isdigit())
    items = await _read(request, queries.review_queue, task, mode, skip=frozenset(sorted(skipped)[-200:]))
    counts = await _read(request, queries.review_counts, task)
    spec = await asyncio.to_thread(request.app.state.workhorse.spec_of, task)
    labels = _labels(spec) if spec else []
    kind = spec.kind if spec else ("classify" if items and isinstance(items[0]["final_answer"], str) else "extract")
    cards = [{"call": item, "choices": _choices(item, labels), "answer_json": _pretty(item["final_answer"])} for item in items]
    return _page(request, "review.html", session, task=task, mode=mode, cards=cards, labels=labels, kind=kind,
                 counts=counts, skip=",".join(str(i) for i in sorted(skipped)[-200:]), known=spec is not None)


def _of_kinds(state, names: list[str], kinds: tuple[str, ...], *, unknown: bool = False) -> list[str]:
    """The tasks among `names` of one of `kinds` (and, with `unknown`, those the server does not know)."""
    found = []
    for name in names:
        spec = state.spec_of(name)
        if spec.kind in kinds if spec is not None else unknown:
            found.append(name)
    return found


def _labels(spec) -> list[str]:
    if spec.kind != "classify":
        return []
    names = list(spec.label_names)
    if spec.classify.out_of_scope is not None and spec.classify.out_of_scope.label not in names:
        names.append(spec.classify.out_of_scope.label)
    return names


def _choices(call: dict[str, Any], labels: list[str]) -> list[str]:
    """The labels the number keys pick, the likeliest first: the model's top ones, the upstream's
    answer, then the rest of the task's labels, up to nine."""
    choices = [label for label, _ in _alternatives(call)]
    for extra in (call.get("upstream_answer"), call.get("output")):
        if isinstance(extra, str) and extra not in choices:
            choices.append(extra)
    choices += [label for label in labels if label not in choices]
    return choices[:9]


@router.post("/api/calls/{call_id}/feedback")
async def correct(request: Request, body: Feedback, call_id: int) -> dict[str, Any]:
    """A correction from the review queue (JSON, the CSRF token in X-CSRF-Token)."""
    session = _changing(request, request.headers.get("x-csrf-token"))
    return await record_correction(request, call_id, body, by=session.who)


# -- tasks --------------------------------------------------------------------------------------
@router.get("/tasks", response_class=HTMLResponse)
async def tasks(request: Request, message: str = "") -> Response:
    from workhorse.escalation.curve import escalation_curve
    from workhorse.tasks import store

    session = _session(request)
    state = request.app.state.workhorse
    logged = await _read(request, queries.task_names) if state.call_log is not None else []
    answered = state.served_names()
    names = sorted(set(answered) | set(await asyncio.to_thread(store.list_task_names)) | set(logged))
    listing = []
    for name in names:
        spec = await asyncio.to_thread(state.spec_of, name) if name in answered else None
        versions = await asyncio.to_thread(_versions, name)
        corrected = await _read(request, queries.corrected_calls, name) if state.call_log is not None else []
        judged = [c for c in corrected if c["confidence"] is not None and c["output"] is not None]
        chart = None
        if len(judged) >= 2:
            truth = [corrected_answer(c["feedback"]) for c in judged]
            curve = escalation_curve(truth, [c["output"] for c in judged], [c["confidence"] for c in judged])
            chart = lines(f"Accuracy by escalation rate ({len(judged)} corrected calls, perfect upstream)",
                          [f"{p['escalation_rate']:.0%}" for p in curve], {"accuracy": [p["accuracy"] for p in curve]}, top=1.0)
        listing.append({"name": name, "kind": spec.kind if spec else None,
                        "serving": spec.version if spec else None, "versions": versions, "chart": chart})
    return _page(request, "tasks.html", session, tasks=listing, message=message)


def _versions(name: str) -> list[dict[str, Any]]:
    """A stored task's versions with their gate reports; the active one is the promoted one, else the latest."""
    from workhorse.tasks import store

    versions = store.task_versions(name)
    active = store.active_version(name) or (max(versions) if versions else None)
    found = []
    for version in versions:
        gate_file = store.tasks_dir() / name / f"v{version}" / "gate.json"
        gate = json.loads(gate_file.read_text()) if gate_file.is_file() else None
        found.append({"version": version, "active": version == active, "gate": gate})
    return found


@router.post("/tasks/{name}/promote")
async def promote(request: Request, name: str, version: int = Form(...), csrf: str = Form("")) -> Response:
    from workhorse.tasks import store

    session = _changing(request, csrf)
    try:
        await asyncio.to_thread(store.promote, name, version, reason=f"console: {session.who}")
    except WorkhorseError as error:
        raise ApiError(404, str(error)) from None
    return RedirectResponse("/ui/tasks?" + urlencode({"message": f"{name}: v{version} is now active"}), status_code=303)


@router.post("/tasks/{name}/rollback")
async def rollback(request: Request, name: str, csrf: str = Form("")) -> Response:
    from workhorse.tasks import store

    _changing(request, csrf)
    try:
        version = await asyncio.to_thread(store.rollback, name)
    except WorkhorseError as error:
        raise ApiError(409, str(error)) from None
    return RedirectResponse("/ui/tasks?" + urlencode({"message": f"{name}: back to v{version}"}), status_code=303)


# -- log templates ------------------------------------------------------------------------------
@router.get("/templates", response_class=HTMLResponse)
async def templates_index(request: Request) -> Response:
    session = _session(request)
    state = request.app.state.workhorse
    names = await asyncio.to_thread(_of_kinds, state, state.served_names(), ("logs",))
    return _page(request, "templates_index.html", session, task_names=names)


@router.get("/templates/{task}", response_class=HTMLResponse)
async def log_templates(request: Request, task: str) -> Response:
    from workhorse.logparse.cache import TemplateCache
    from workhorse.tasks.logs import cache_path

    session = _session(request)
    counts = await _read(request, queries.template_counts, task)
    served = request.app.state.workhorse.tasks.get(task)
    live = getattr(served.pipeline.local, "log_task", None) if served is not None and served.pipeline is not None else None
    learnt = live.templates() if live is not None else list(await asyncio.to_thread(TemplateCache.load, cache_path(task)))
    rows = []
    for template in learnt:
        seen = counts.get(template.id, {})
        rows.append({"id": template.id, "template": template.text, "hits": template.hits, "recent": seen.get("lines", 0),
                     "example": seen.get("example") or template.example})
    rows.sort(key=lambda row: (-row["recent"], -row["hits"]))
    return _page(request, "templates.html", session, task=task, rows=rows, window=queries.TEMPLATE_WINDOW)
