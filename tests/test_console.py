"""The console at /ui over real HTTP on loopback: a real server (the tiny model, a classify task
that escalates its long items to a loopback teacher, an extract task), its call log in SQLite;
then the pages, filters, keyset pagination, corrections with their CSRF token and reviewer, the
sign-in with API keys and the Host check. The browser test drives Debian's Chromium through
Playwright: every page, the filters, three corrections from the keyboard alone, read back
through the API, and no request to any other host."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_serve import LiveServer

from workhorse.bench.teacher import GoldTeacher
from workhorse.calllog import CallLog
from workhorse.calllog.rollup import read_rollup
from workhorse.calllog.totals import CallTotals
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

GOLD = {
    "refund please": "refund",
    "my card was charged twice for one order, refund me": "refund",
    "cannot login": "login",
    "I cannot log in since the password reset yesterday at noon": "login",
    "card blocked": "card",
    "my card is blocked after I travelled abroad, please help": "card",
    "where is my refund": "refund",
    "login fails": "login",
}
CLASSIFY = """
name: toy-intents
kind: classify
model: {model}
instructions: Classify the request.
labels: [{{name: refund}}, {{name: login}}, {{name: card}}]
escalation:
  mode: threshold
  threshold: 0.0
  max_input_chars: 30
  upstream: {{base_url: "{url}", model: gold, api_key_env: null, timeout_s: 30, retries: 0}}
"""
EXTRACT = """
name: toy-order
kind: extract
model: {model}
instructions: Find the order number.
schema:
  type: object
  properties:
    order_id: {{type: [string, "null"], maxLength: 12}}
  required: [order_id]
  additionalProperties: false
"""
LOGS = "name: toy-logs\nkind: logs\nmodel: {model}\n"
LOG_LINES = ["Accepted password for alice from 10.0.0.1 port 22 ssh2", "Accepted password for bob from 10.0.0.2 port 2222 ssh2",
             "Failed password for root from 10.0.0.3 port 22 ssh2", "session opened for user alice",
             "session opened for user bob", "Connection closed by 10.0.0.9"]
KEY = "console-test-key"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf) -> Iterator[tuple[ServerState, ServeSettings, Path]]:
    directory = tmp_path_factory.mktemp("console")
    with GoldTeacher(GOLD) as teacher:
        (directory / "toy-intents.yaml").write_text(CLASSIFY.format(model=tiny_gguf, url=teacher.url))
        (directory / "toy-order.yaml").write_text(EXTRACT.format(model=tiny_gguf))
        (directory / "toy-logs.yaml").write_text(LOGS.format(model=tiny_gguf))
        tasks = [str(directory / f"{name}.yaml") for name in ("toy-intents", "toy-order", "toy-logs")]
        settings = ServeSettings(models=[str(tiny_gguf)], tasks=tasks,
                                 threads=1, n_ctx=2048, n_slots=4, call_log=str(directory / "calls.db"), task_reload_s=0)
        state = ServerState(settings)
        state.load()
        try:
            yield state, settings, directory
        finally:
            asyncio.run(state.close())


@pytest.fixture(scope="module")
def server(served) -> Iterator[str]:
    state, settings, _ = served
    with LiveServer(create_app(settings, state=state)) as live:
        for text in GOLD:
            assert httpx.post(f"{live.url}/v1/tasks/toy-intents", json={"input": text}, timeout=60).status_code == 200
        for text in ("order A-1234 is late", "no order here"):
            assert httpx.post(f"{live.url}/v1/tasks/toy-order", json={"input": text}, timeout=60).status_code == 200
        assert httpx.post(f"{live.url}/v1/tasks/toy-logs", json={"inputs": LOG_LINES}, timeout=120).status_code == 200
        yield live.url


@pytest.fixture(scope="module")
def keyed_server(served) -> Iterator[str]:
    state, settings, _ = served
    keyed = ServeSettings(**settings.model_dump(exclude={"api_keys"}), api_keys=[KEY])
    with LiveServer(create_app(keyed, state=state)) as live:
        yield live.url


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, follow_redirects=False)


def _csrf(page: str) -> str:
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)


def test_every_page_renders_from_the_call_log(server):
    with _client(server) as client:
        overview = client.get("/ui")
        assert overview.status_code == 200
        assert re.search(r'id="total-calls">16<', overview.text)  # 8 classify, 2 extract and 6 log lines
        assert overview.text.count("<svg") == 3 and "toy-intents" in overview.text
        listing = client.get("/ui/calls")
        assert listing.status_code == 200 and listing.text.count('<tr class="source-') == 16
        escalated = client.get("/ui/calls", params={"source": "upstream"})
        assert escalated.text.count('<tr class="source-upstream"') == 3  # the three items over 30 characters
        assert 'class="source-local"' not in escalated.text
        for path in ("/ui/review", "/ui/review/toy-intents", "/ui/review/toy-order", "/ui/tasks", "/ui/templates"):
            assert client.get(path).status_code == 200, path
        templates = client.get("/ui/templates/toy-logs").text
        counted = [int(n) for n in re.findall(r"</code></td><td>(\d+)</td>", templates)]
        assert counted and sum(counted) == len(LOG_LINES)  # every logged line under one learnt template


def test_a_call_page_shows_what_was_sent_upstream_and_the_alternatives(server, served):
    state = served[0]
    [call] = [c for c in state.call_log.iterate(task="toy-intents") if c["source"] == "upstream"][:1]
    with _client(server) as client:
        page = client.get(f"/ui/calls/{call['id']}").text
    assert call["upstream_request"] == call["input"]  # nothing to redact in it
    assert f'<pre id="sent-upstream">{call["input"]}</pre>' in page
    assert "long_input" in page and "<th>probability</th>" in page
    for label in ("refund", "login", "card"):
        assert f"<td>{label}</td>" in page


def test_calls_are_paged_by_keyset_and_filtered(server):
    with _client(server) as client:
        first = client.get("/ui/calls", params={"task": "toy-intents"}).text
        ids = [int(i) for i in re.findall(r'<a href="/ui/calls/(\d+)">', first)]
        assert ids == sorted(ids, reverse=True) and len(ids) == 8
        assert 'id="older"' not in first  # one page
        text = client.get("/ui/calls", params={"text": "CARD"}).text  # case-insensitive
        assert text.count('<tr class="source-') == 3
        assert client.get("/ui/calls", params={"min_confidence": "2"}).text.count('<tr class="source-') == 0
        assert client.get("/ui/calls", params={"since": "nonsense"}).status_code == 422


def test_keyset_pagination_walks_every_call_once(tmp_path):
    from workhorse.calllog.store import CallRecord, wait_committed
    from workhorse.serve.console.queries import CallFilter, list_calls

    with CallLog(tmp_path / "calls.db") as log:
        for i in range(23):
            wait_committed(log.record(CallRecord(task="t", model="m", input=f"item {i}", source="local", confidence=i / 23)))
        seen, before = [], None
        with log.reading() as connection:
            while True:
                page, before = list_calls(connection, CallFilter(task="t", min_confidence=0.2), before=before, limit=5)
                seen += [row["id"] for row in page]
                if before is None:
                    break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 18  # confidence ≥ 0.2: items 5–22


def test_a_correction_needs_the_csrf_token_and_is_logged_with_the_reviewer(server, served):
    state = served[0]
    call_id = next(c["id"] for c in state.call_log.iterate(task="toy-intents") if c["input"] == "login fails")
    with _client(server) as client:
        client.post("/ui/login", data={"name": "dana"})
        csrf = _csrf(client.get("/ui/review/toy-intents").text)
        url = f"/ui/api/calls/{call_id}/feedback"
        assert client.post(url, json={"label": "login"}).status_code == 403
        assert client.post(url, json={"label": "login"}, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
        refused = client.post(url, json={"label": "nope"}, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 422 and "refund, login, card" in refused.json()["error"]["message"]
        assert client.post(url, json={"label": "login"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    stored = httpx.get(f"{server}/v1/calls/{call_id}").json()
    assert stored["feedback"] == {"label": "login"} and stored["feedback_by"] == "dana"
    # a cross-site form cannot carry the cookie (SameSite=Strict) nor the token: without both, nothing changes
    assert httpx.post(f"{server}/ui/api/calls/{call_id}/feedback", json={"label": "card"}).status_code == 401


def test_extract_corrections_are_checked_against_the_schema(server, served):
    state = served[0]
    call_id = next(c["id"] for c in state.call_log.iterate(task="toy-order"))
    with _client(server) as client:
        csrf = _csrf(client.get("/ui/review/toy-order").text)
        url, headers = f"/ui/api/calls/{call_id}/feedback", {"X-CSRF-Token": csrf}
        too_long = client.post(url, json={"fields": {"order_id": "A" * 20}}, headers=headers)
        assert too_long.status_code == 422 and "order_id" in too_long.json()["error"]["message"]
        assert client.post(url, json={"fields": {"order_id": "A-1234", "extra": 1}}, headers=headers).status_code == 422
        assert client.post(url, json={"fields": {"order_id": "A-1234"}}, headers=headers).status_code == 200
    # the API checks the same way
    assert httpx.post(f"{server}/v1/calls/{call_id}/feedback", json={"fields": {"order_id": 5}}).status_code == 422


def test_the_rollup_agrees_with_the_calls(served, server):
    state = served[0]
    calls = list(state.call_log.iterate())
    expected = CallTotals()
    for call in calls:
        expected.add(call)
    rolled = CallTotals()
    with state.call_log.reading() as connection:
        for _, totals in read_rollup(connection):
            rolled.merge(totals)
    assert rolled.local_cpu_s == pytest.approx(expected.local_cpu_s)  # summed in another order
    rolled.local_cpu_s = expected.local_cpu_s
    assert rolled == expected


def test_with_api_keys_the_console_asks_for_one(keyed_server):
    with _client(keyed_server) as client:
        refused = client.get("/ui/calls")
        assert refused.status_code == 303 and refused.headers["location"] == "/ui/login?next=%2Fui%2Fcalls"
        assert client.get("/v1/calls/1").status_code == 401  # the API still wants its bearer key
        wrong = client.post("/ui/login", data={"key": "guess", "name": "eve", "next": "/ui/calls"})
        assert wrong.status_code == 401 and "not one of this server" in wrong.text
        right = client.post("/ui/login", data={"key": KEY, "name": "sam", "next": "/ui/calls"})
        assert right.status_code == 303 and right.headers["location"] == "/ui/calls"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert client.get("/ui/calls").status_code == 200
        offsite = client.post("/ui/login", data={"key": KEY, "next": "https://elsewhere.example/"})
        assert offsite.headers["location"] == "/ui"  # no open redirect
        client.cookies.set("workhorse_console", client.cookies["workhorse_console"][:-4] + "0000", path="/ui")
        assert client.get("/ui/calls").status_code == 303  # a tampered cookie is no session


def test_servers_sharing_a_console_secret_share_sessions(served):
    """Two servers behind one address (or serve --ray's replicas): a session signed by one is good
    on the other when they share `console_secret`, and only then."""
    state, settings, _ = served
    shared = {"api_keys": [KEY], "console_secret": "one-secret-for-both"}
    first = ServeSettings(**settings.model_dump(exclude={"api_keys"}) | shared)
    with LiveServer(create_app(first, state=state)) as one, LiveServer(create_app(first, state=state)) as two, \
            LiveServer(create_app(ServeSettings(**settings.model_dump(exclude={"api_keys"}), api_keys=[KEY]), state=state)) as other:
        with _client(one.url) as client:
            assert client.post("/ui/login", data={"key": KEY, "name": "sam", "next": "/ui"}).status_code == 303
            cookie = client.cookies["workhorse_console"]
        for url, expected in ((two.url, 200), (other.url, 303)):
            with _client(url) as client:
                client.cookies.set("workhorse_console", cookie, path="/ui")
                assert client.get("/ui/calls").status_code == expected


def test_the_console_answers_only_to_loopback_host_names(server):
    rebound = httpx.get(f"{server}/ui/calls", headers={"Host": "attacker.example"})
    assert rebound.status_code == 421


@pytest.mark.skipif(BROWSER is None and not os.environ.get("CI"), reason="Chromium is not installed (scripts/setup --test installs it)")
def test_in_a_real_browser(server, served, tmp_path):
    """Every page, the filters, three corrections from the keyboard alone; screenshots of each page
    go to $WORKHORSE_CONSOLE_SHOTS (else a temporary folder)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a loaded CI machine: each check waits up to 30 s before it fails

    assert BROWSER is not None, "CI must have Chromium: scripts/setup --test installs it"
    shots = Path(os.environ.get("WORKHORSE_CONSOLE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    state = served[0]
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda request: None if request.url.startswith(server) else elsewhere.append(request.url))
        page.on("pageerror", lambda error: elsewhere.append(f"script error: {error}"))
        try:
            page.goto(f"{server}/ui/login")
            expect(page.locator("input[name=name]")).to_be_focused()  # autofocus: keys typed before it are lost
            page.keyboard.type("reviewer-1")
            page.keyboard.press("Enter")
            page.wait_for_url(f"{server}/ui")
            expect(page.locator("#total-calls")).to_have_text(str(state.call_log.count()))
            page.screenshot(path=shots / "overview.png", full_page=True)

            page.goto(f"{server}/ui/calls")
            page.select_option("select[name=source]", "upstream")
            page.click("#call-filters button[type=submit]")
            expect(page.locator("#calls tbody tr")).to_have_count(3)
            page.screenshot(path=shots / "calls-filtered.png", full_page=True)
            page.click("#calls tbody tr a")
            expect(page.locator("#sent-upstream")).to_be_visible()
            page.screenshot(path=shots / "call.png", full_page=True)

            page.goto(f"{server}/ui/review/toy-intents")
            expect(page.locator("#queue[data-ready=true]")).to_have_count(1)  # its script has taken the keyboard
            cards = page.locator("article.card")
            first, second, third = (cards.nth(i).get_attribute("data-call") for i in range(3))
            choices = [cards.nth(0).locator("button[data-label]").nth(1).get_attribute("data-label")]
            page.screenshot(path=shots / "review.png", full_page=True)
            page.keyboard.press("2")  # the second likeliest label
            expect(cards.nth(1)).to_be_visible()
            page.keyboard.press("/")  # type a label
            page.keyboard.type("card")
            page.keyboard.press("Enter")
            expect(cards.nth(2)).to_be_visible()
            answer = cards.nth(2).locator("b.answer").inner_text()
            page.keyboard.press("a")  # accept the answer as right
            expect(cards.nth(3)).to_be_visible()

            for path, name in (("/ui/tasks", "tasks"), ("/ui/templates/toy-logs", "templates"), ("/ui?range=24h", "overview-24h")):
                page.goto(f"{server}{path}")
                page.screenshot(path=shots / f"{name}.png", full_page=True)
        finally:
            browser.close()
    assert elsewhere == []
    corrected = {call_id: httpx.get(f"{server}/v1/calls/{call_id}").json() for call_id in (first, second, third)}
    assert corrected[first]["feedback"] == {"label": choices[0]}
    assert corrected[second]["feedback"] == {"label": "card"}
    assert corrected[third]["feedback"] == {"label": answer}
    assert {c["feedback_by"] for c in corrected.values()} == {"reviewer-1"}
    assert all(time.time() - c["feedback_at"] < 300 for c in corrected.values())


def test_promote_and_roll_back_from_the_tasks_page(server, tiny_gguf):
    from workhorse.tasks import store

    spec = store.parse_task(CLASSIFY.format(model=tiny_gguf, url="http://127.0.0.1:9/v1").replace("toy-intents", "toy-stored"))
    store.save_task(spec.model_copy(update={"version": 1}))
    store.save_task(spec.model_copy(update={"version": 2}))
    with _client(server) as client:
        page = client.get("/ui/tasks").text
        assert 'id="task-toy-stored"' in page and "<td>v1</td>" in page
        csrf = _csrf(page)
        assert client.post("/ui/tasks/toy-stored/promote", data={"version": "1"}).status_code == 403  # no token
        promoted = client.post("/ui/tasks/toy-stored/promote", data={"version": "1", "csrf": csrf})
        assert promoted.status_code == 303 and store.active_version("toy-stored") == 1
        assert store.promotions("toy-stored")[-1]["reason"] == "console: console"
        assert client.post("/ui/tasks/toy-stored/promote", data={"version": "7", "csrf": csrf}).status_code == 404
        assert client.post("/ui/tasks/toy-stored/rollback", data={"csrf": csrf}).status_code == 303
    assert store.active_version("toy-stored") == 2


def test_without_keys_the_console_answers_only_this_machine(served):
    state, settings, _ = served
    app = create_app(settings, state=state)

    async def visit(client: tuple[str, int]) -> int:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return (await http.get("/ui/login")).status_code

    assert asyncio.run(visit(("10.0.0.5", 5555))) == 403
    assert asyncio.run(visit(("127.0.0.1", 5555))) == 200
