"""The hostile corpus opened one by one in the web inbox, in Chromium: no script runs (neither the
``top.pwned`` sentinel is set nor the trap server hit by the ``fetch`` the scripts would make), nothing is
requested from any host but the server (Chrome's network log), the top window is never navigated and no
window opens. Then the control: allowing one message's remote images does reach the trap, so a silent
trap means something."""

from __future__ import annotations

from typing import Any

from tests.support.servers import start_http
from tests.web import hostile
from tests.web.inbox.browser import Page
from tests.web.inbox.conftest import Box, mail


def test_the_hostile_corpus_runs_no_script_loads_nothing_remote_and_never_navigates(box: Box, page: Page):
    hits: list[str] = []

    def trap(environ: dict, start_response: Any) -> list[bytes]:
        hits.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "image/gif"), ("Content-Length", "0")])
        return [b""]

    trap_server = start_http(trap)
    try:
        corpus = hostile.corpus()
        for path in corpus:
            box.deliver(hostile.load(path, trap_server.url, to=box.email))
        box.deliver(mail("Marker: after the corpus"))
        page.log_in(box.email, box.password)
        page.wait_live()
        page.wait_row("Marker: after the corpus")
        page.requests()  # from here on, every request is looked at
        top = page.driver.current_url
        for path in corpus:
            subject = hostile.subject(path)
            frame = page.frame(page.open_row(subject))
            assert frame["sandbox"] == "allow-popups allow-popups-to-escape-sandbox", subject
            assert page.js("return window.pwned") is None, subject
            assert page.driver.current_url == top, subject
        # Whatever a message started has had the time of every later message to show: one more, then look.
        page.open_row("Marker: after the corpus")
        assert page.js("return window.pwned") is None
        assert hits == []
        assert page.foreign_requests() == []
        assert page.driver.current_url == top and len(page.driver.window_handles) == 1

        page.open_row("Hostile: remote images")
        page.wait(lambda: page.visible("images-bar"), "the blocked-images bar")
        page.by_css("#show-images")[0].click()
        page.wait(lambda: "/pixel.png" in hits, "the trap reached once remote images are allowed")
        assert not [h for h in hits if h == "/ran"]
    finally:
        trap_server.stop()
