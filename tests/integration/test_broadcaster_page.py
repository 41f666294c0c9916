"""The live page in a real headless browser (Debian's chromium, driven by Playwright): trades and the book appear.

Set ``BROADCASTER_PAGE_SCREENSHOT=docs/broadcaster.png`` to also save the screenshot for the README.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from embedded.kafka import TansuBroker
from tests.integration.test_broadcaster import Broadcaster, create_topics, produce, real_records, replayed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    # Skipped only on a developer machine without chromium; in CI (which installs it) a missing browser fails.
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("CI") != "true",
        reason="Debian's chromium is missing: apt-get install -y chromium",
    ),
]

KEY = "coinbase:BTC.USD"
WAIT_MS = 60_000


def test_the_page_shows_live_trades_and_the_order_book(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    outs = real_records("COINBASE")
    cut = len(outs) // 3
    trades_after = [record for key, topic, record in outs[cut:] if topic == "trades" and key == KEY]
    truth = replayed(outs)[KEY]
    assert trades_after and truth.valid

    with Broadcaster(kafka.bootstrap, tmp_path) as broadcaster:
        produce(kafka.bootstrap, outs[:cut])  # the instruments the page offers are the ones seen so far
        broadcaster.wait_consumed(cut)
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                page = context.new_page()
                page.goto(broadcaster.url)
                page.wait_for_selector("#venue option[value='coinbase']", state="attached", timeout=WAIT_MS)
                page.select_option("#venue", "coinbase")
                page.select_option("#instrument", "BTC.USD")
                page.select_option("#channel", "trades")
                # The book arrives as the broadcaster's snapshot, before any new record.
                page.wait_for_function("document.getElementById('book-state').textContent === 'live'", timeout=WAIT_MS)
                produce(kafka.bootstrap, outs[cut:])
                rows = min(len(trades_after), 60)
                page.wait_for_function(f"document.querySelectorAll('#feed-rows tr').length === {rows}", timeout=WAIT_MS)
                best_bid, best_ask = truth.best_bid(), truth.best_ask()
                page.wait_for_function(
                    "([bid, ask]) => {"
                    " const first = document.querySelector('#book-rows tr');"
                    " return first && Number(first.children[1].textContent) === bid"
                    " && Number(first.children[2].textContent) === ask; }",
                    arg=[best_bid, best_ask],
                    timeout=WAIT_MS,
                )
                newest = page.locator("#feed-rows tr").first.locator("td")
                assert float(newest.nth(2).inner_text()) == trades_after[-1]["price"]
                assert newest.nth(1).inner_text() == trades_after[-1]["side"]
                assert page.locator("#book-rows tr").count() == min(15, max(len(truth.bids), len(truth.asks)))
                assert page.inner_text("#gaps") == "0"
                shot = tmp_path / "broadcaster-page.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                if target := os.environ.get("BROADCASTER_PAGE_SCREENSHOT"):
                    shutil.copyfile(shot, target)
            finally:
                context.close()
