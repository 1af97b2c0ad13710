"""Take docs/img/dashboard.png from a running dashboard with a real headless Chromium.

    make run                                   # in another terminal; wait until it trains
    .venv/bin/python scripts/dashboard_screenshot.py --wait-version 2

It waits until the page shows the trainer past its first batch and a player driving a published
version of at least `--wait-version` (so every tile has something to show), then saves
a 1920x1080 picture. Needs Debian's chromium and chromium-driver
(scripts/install-test-deps.sh) and selenium (the `dev` extra).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
READY = """
const s = typeof last === "undefined" ? null : last;  // the page's latest payload
if (!s || !s.ok || !(s.trainer.batches > 0)) return null;
const versions = s.players.map(p => p.model_version);
return versions.length && Math.max(...versions) >= arguments[0] ? s.trainer.batches : null;
"""


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="the dashboard")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/img/dashboard.png"),
              show_default=True)
@click.option("--wait-version", type=int, default=1, show_default=True,
              help="wait until a player drives at least this published version")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="seconds to wait for that")
def main(url: str, out: Path, wait_version: int, timeout: float) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for a browser or driver online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1920,1080", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.page_load_strategy = "eager"  # the MJPEG <img>s never finish loading
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:  # the page itself 1920x1080 (a window of that size leaves less to the page)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
        driver.get(url)
        deadline = time.monotonic() + timeout
        while (batches := driver.execute_script(READY, wait_version)) is None:
            if time.monotonic() > deadline:
                raise click.ClickException(f"no player on version {wait_version} with the trainer training "
                                           f"after {timeout:.0f} s")
            time.sleep(2)
        time.sleep(5)  # a few more points on the loss curve and fresh camera frames
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        click.echo(f"{out}: trainer at batch {batches}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
