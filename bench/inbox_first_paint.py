"""The web inbox in Debian's headless Chromium: first paint of a 10,000-message inbox, and delivery → row.

The inbox is filled as bench/inbox_query.py fills it (``append_many``, conversations of 1–5 messages, 70 %
read), then a real ``serve`` (SQLite, its LMTP child) answers the page. The browser logs in once; each
sample then loads the page afresh (its app password kept in session storage, as after a reload) and reads
the page's own ``jmapmono:first-rows`` mark: milliseconds from the start of navigation to the first page
of rows in the DOM (Session, Mailbox/get, Email/query + Email/get + Thread/get of 50, with the files
revalidated by ETag). The same on a 10-message inbox says whether the size of the mailbox shows.

Delivery → row: with the inbox open and its socket live, one message at a time over LMTP; from just
before DATA until a MutationObserver in the page sees its row (both clocks are this machine's).

    .venv/bin/python bench/inbox_first_paint.py [--messages 10000] [--samples 10] [--deliveries 20]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before requests, kombu, psycopg are imported

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402
from inbox_query import USER, populate  # noqa: E402

from jmapmono.config import load_config  # noqa: E402
from jmapmono.runtime import Runtime  # noqa: E402
from tests.support.lmtp_client import LMTPClient  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402
from tests.web.inbox.browser import start_chromium  # noqa: E402

FIRST_ROWS = "return (performance.getEntriesByName('jmapmono:first-rows')[0] || {}).startTime"
WATCH = """
window.__seen = {};
new MutationObserver(() => {
  for (const s of document.querySelectorAll('#message-list .row .subject'))
    if (!(s.textContent in window.__seen)) window.__seen[s.textContent] = Date.now();
}).observe(document.getElementById('message-list'), {childList: true, subtree: true});
"""


def browser(work: Path):
    return start_chromium(Path(tempfile.mkdtemp(dir=work)), (1280, 800))


def log_in(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    wait_until(lambda: driver.find_element(By.ID, "login").is_displayed(), 20, message="the login form")
    driver.find_element(By.ID, "login-email").send_keys(USER)
    driver.find_element(By.ID, "login-password").send_keys(common.PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(lambda: driver.execute_script(FIRST_ROWS), 30, message="the inbox")


def first_paint(figures: common.Figures, count: int, samples: int, deliveries: int) -> None:
    with common.temp_dir() as work:
        url = common.database_url("sqlite", work)
        services = Runtime(load_config(common.jmapmono_env(url, work / "data")))
        try:
            user, _ = services.accounts.create_user(USER, common.PASSWORD)
            inbox = services.mailboxes.mailbox_by_role(user.account_id, "inbox").id
            populate(services, user.account_id, inbox, count)
        finally:
            services.close()
        with common.serving(common.jmapmono_env(url, work / "data"), work) as server:
            common.wait_outbox_drained(url)
            base = f"http://127.0.0.1:{server.http_port}"
            driver = browser(work)
            try:
                log_in(driver, base)
                paints = []
                for _ in range(samples + 2):
                    driver.get(base + "/")
                    paints.append(wait_until(lambda: driver.execute_script(FIRST_ROWS), 30, message="the rows"))
                figures.latency(f"first rows of a {count:,}-message inbox", paints[2:], note="navigation → rows")
                if deliveries:
                    wait_until(
                        lambda: (
                            driver.execute_script("return document.getElementById('conn').dataset.status") == "live"
                        ),
                        30,
                        message="a live socket",
                    )
                    driver.execute_script(WATCH)
                    latencies = []
                    with LMTPClient("127.0.0.1", server.lmtp_port) as lmtp:
                        lmtp.lhlo()
                        for n in range(deliveries):
                            subject = f"live delivery {n}"
                            sent = time.time() * 1000
                            common.lmtp_deliver(lmtp, USER, common.message(n, USER, subject=subject))
                            seen = wait_until(
                                lambda s=subject: driver.execute_script("return window.__seen[arguments[0]]", s),
                                30,
                                message=subject,
                            )
                            latencies.append(seen - sent)
                    figures.latency(f"delivery → row ({count:,}-message inbox)", latencies, note="LMTP DATA → DOM")
            finally:
                driver.quit()


def main(argv: list[str]) -> None:
    count = common.arg_int(argv, "messages", 10_000)
    samples = common.arg_int(argv, "samples", 10)
    deliveries = common.arg_int(argv, "deliveries", 20)
    common.banner(f"web inbox in headless Chromium, SQLite, {samples} page loads per inbox")
    figures = common.Figures("inbox_first_paint")
    first_paint(figures, 10, samples, 0)
    first_paint(figures, count, samples, deliveries)


if __name__ == "__main__":
    main(sys.argv[1:])
