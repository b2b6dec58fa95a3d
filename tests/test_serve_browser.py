"""The demo page in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium) against a real server.

The server is uvicorn on 127.0.0.1 (ephemeral port) in a thread, over the same `Service` `t2s serve` starts. Each
test saves a screenshot of the page in its tmp output (`demo.png`). Skipped, saying why, only when no Chromium or
Playwright is installed (`.ci/run` installs Debian's chromium).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compose_config
from test_serve import DEMO_QUESTIONS, scripted_config

from t2s.serve.app import create_app
from t2s.serve.service import Service

CHROMIUM = os.environ.get("T2S_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - playwright is a dev dependency
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)),
                       reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (or set T2S_CHROMIUM)"),
]


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 at an ephemeral port, in a daemon thread, until `stop()`."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def open_page(browser: object, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    page.outside_requests = outside  # type: ignore[attr-defined]
    return page


def test_demo_page_asks_a_question_and_shows_sql_and_rows(browser: object, session_cache: Path,
                                                          tmp_path: Path) -> None:
    service = Service(scripted_config(session_cache, tmp_path), tmp_path / "run")
    server = LiveServer(create_app(service))
    try:
        page = open_page(browser, server.url)
        page.select_option("#db-select", "shop")
        page.wait_for_selector("#schema .tname:text('customers')")
        q = next(q for q in DEMO_QUESTIONS if q["db_id"] == "shop" and "JOIN" in q["query"].upper())
        page.fill("#question", q["question"])
        page.click("#ask")
        page.wait_for_selector("#result tbody tr", timeout=30_000)
        sql_text = page.inner_text("#sql")
        assert " ".join(sql_text.split()).lower() == " ".join(q["query"].split()).lower()
        assert page.locator("#sql .kw").count() >= 3, "the SQL is highlighted"
        assert page.locator("#candidates li").count() == 1
        stages = page.locator("#trace tbody tr")
        assert stages.count() == len(service.stages())
        assert "generator/zero_shot" in stages.nth(4).inner_text()
        n_rows = page.locator("#result tbody tr").count()
        assert n_rows > 0 and "row(s)" in page.inner_text("#result-meta")
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        # the Run button runs the selected SQL through POST /execute and shows the same rows
        page.evaluate("document.querySelector('#result').innerHTML = ''")
        page.click("#run")
        page.wait_for_selector("#result tbody tr")
        assert page.locator("#result tbody tr").count() == n_rows
        assert page.outside_requests == [], "the page fetched something outside the server"  # type: ignore[attr-defined]
        assert (tmp_path / "demo.png").stat().st_size > 10_000
    finally:
        server.stop()
        service.close()


def test_demo_page_with_the_tiny_model(browser: object, session_cache: Path, tmp_path: Path) -> None:
    """`llm=tiny`: the real HF path. Random weights write token soup, so the page must show the SQL, the stages,
    and the validator's rejection instead of rows; then a query typed into the SQL runner gives the result table."""
    cfg = compose_config(["generator.max_new_tokens=48"], cache_dir=session_cache, output_root=tmp_path)
    service = Service(cfg, tmp_path / "run")
    server = LiveServer(create_app(service))
    try:
        page = open_page(browser, server.url)
        assert page.input_value("#db-select") == "library"
        page.click(".samples a >> nth=0")
        assert page.input_value("#question") == DEMO_QUESTIONS[0]["question"]
        page.click("#ask")
        page.wait_for_selector("#trace tbody tr", timeout=60_000)
        served = page.evaluate("state.sql")  # what POST /generate_sql returned as the final SQL
        shown = page.inner_text("#sql")
        assert (" ".join(shown.split()) == " ".join(served.split())) if served else shown == "(no SQL)"
        assert page.locator("#trace tbody tr").count() == len(service.stages())
        meta = page.inner_text("#result-meta")
        assert meta.startswith(("ok", "rejected", "error")) or "row(s)" in meta
        page.screenshot(path=str(tmp_path / "demo_tiny.png"), full_page=True)
        # a bad query run from the page shows the server's reason
        page.evaluate("setSQL('DROP TABLE books')")
        page.click("#run")
        page.wait_for_selector("#error:not([hidden])")
        assert "not_select" in page.inner_text("#error") and "DROP TABLE" in page.inner_text("#error")
        page.evaluate("setSQL('SELECT title, published_year FROM books ORDER BY published_year LIMIT 5')")
        page.click("#run")
        page.wait_for_selector("#result tbody tr")
        assert page.locator("#result tbody tr").count() == 5
        assert page.locator("#result thead th").all_inner_texts() == ["title", "published_year"]
    finally:
        server.stop()
        service.close()
