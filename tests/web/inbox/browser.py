"""Debian's Chromium driven by Selenium through Debian's chromedriver: nothing is downloaded, ever.

``chromium(tmp_path)`` gives a headless browser with its network log on (``goog:loggingPrefs``
performance), or skips the test with the reason when Chromium, chromedriver or Selenium is missing.
``Page`` wraps it with the waits and the steps the web inbox tests share.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.waiting import wait_until

CHROMIUM = Path(os.environ.get("JMAPMONO_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("JMAPMONO_CHROMEDRIVER", "/usr/bin/chromedriver"))
DESKTOP = (1280, 800)
PHONE = (390, 844)


def chromium(tmp_path: Path, size: tuple[int, int] = DESKTOP) -> Any:
    """A headless Chromium (Debian's) under Debian's chromedriver; skips when either is missing."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver (make test does)")
    return start_chromium(tmp_path, size)


def start_chromium(work: Path, size: tuple[int, int] = DESKTOP) -> Any:
    """Debian's Chromium, headless, with a profile of its own in ``work`` and its performance log on; the
    flags keep it from reaching for any network but the page's (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = work / "chromium-profile"
    profile.mkdir(exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(work / "chromedriver.log"))
    return webdriver.Chrome(service=service, options=options)


class Page:
    """The web inbox in one browser tab."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], Any], message: str, timeout: float = 20) -> Any:
        return wait_until(condition, timeout, interval=0.02, message=message)

    def by_css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def visible(self, element_id: str) -> bool:
        return bool(
            self.js("const e = document.getElementById(arguments[0]); return !!e && !e.closest('[hidden]')", element_id)
        )

    def log_in(self, email: str, password: str) -> None:
        self.driver.get(self.base_url + "/")
        self.wait(lambda: self.visible("login"), "the login form")
        self.by_css("#login-email")[0].send_keys(email)
        self.by_css("#login-password")[0].send_keys(password)
        self.by_css("#login-submit")[0].click()

    def wait_live(self) -> None:
        self.wait(lambda: self.js("return document.getElementById('conn').dataset.status") == "live", "a live socket")

    def rows(self) -> list[dict]:
        """The message list as shown: id, subject, unread, flagged."""
        return self.js(
            "return [...document.querySelectorAll('#message-list .row')].map(r => ({id: r.dataset.id,"
            " subject: (r.querySelector('.subject') || {}).textContent, unread: r.classList.contains('unread'),"
            " flagged: r.classList.contains('flagged')}))"
        )

    def subjects(self) -> list[str]:
        return [r["subject"] for r in self.rows()]

    def wait_row(self, subject: str, timeout: float = 20) -> dict:
        def found() -> dict | None:
            return next((r for r in self.rows() if r["subject"] == subject), None)

        return self.wait(found, f"a row {subject!r}", timeout)

    def open_row(self, subject: str) -> str:
        """Open the message of the row with this subject; its id."""
        row = self.wait_row(subject)
        # Found and clicked in one script: the list may be redrawn (a push) between two WebDriver calls.
        clicked = (
            "const r = document.querySelector(`#message-list .row[data-id='${arguments[0]}']`);"
            " r && r.click(); return !!r"
        )
        self.wait(lambda: self.js(clicked, row["id"]), f"a click on {subject!r}")
        self.wait(
            lambda: self.js("return document.getElementById('reader-subject').textContent") == subject,
            "the message open",
        )
        return row["id"]

    def frame(self, email_id: str) -> dict:
        """The reading frame of that message once shown: its sandbox and srcdoc (read in one script, as the
        frame is replaced when another message opens)."""
        script = (
            "const f = document.querySelector('#reader-body iframe');"
            " return f && f.dataset.email === arguments[0] ? {sandbox: f.getAttribute('sandbox'), srcdoc: f.srcdoc}"
            " : null"
        )
        return self.wait(lambda: self.js(script, email_id), f"the frame of {email_id}")

    def open_mailbox(self, name: str) -> None:
        clicked = (
            "const b = [...document.querySelectorAll('#mailbox-list .mailbox')]"
            ".find(b => b.querySelector('.name').textContent === arguments[0]); b && b.click(); return !!b"
        )
        self.wait(lambda: self.js(clicked, name), f"a click on the mailbox {name!r}")
        self.wait(lambda: self.js("return document.getElementById('list-title').textContent") == name, f"{name} open")

    def move_to(self, name: str) -> None:
        """Choose ``name`` in the reader's "Move to…" menu (found and chosen in one script: it is redrawn)."""
        script = (
            "const s = document.getElementById('move-to');"
            " const o = [...s.options].find(o => o.textContent.trim() === arguments[0]);"
            " if (!o) return false; s.value = o.value; s.dispatchEvent(new Event('change')); return true"
        )
        self.wait(lambda: self.js(script, name), f"{name!r} in the move menu")

    def requests(self) -> list[str]:
        """Every URL the browser asked for since the last call (Chrome's performance log)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
                params = message["params"]
                urls.append(params.get("request", {}).get("url") or params.get("url", ""))
        return urls

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the server (data: and blob: URLs, and about:srcdoc, stay in the page)."""
        own = urlsplit(self.base_url).netloc
        out = []
        for url in self.requests():
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about", "chrome", "devtools") or parts.netloc == own:
                continue
            out.append(url)
        return out

    def screenshot(self, path: Path, copy_to: Path | None = None) -> None:
        self.driver.save_screenshot(str(path))
        if copy_to is not None:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy_to)


def stamp() -> float:
    return time.monotonic()
