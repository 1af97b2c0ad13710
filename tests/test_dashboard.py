"""The dashboard against a real Redis, in a real headless Chromium (Debian's, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from pipeline.observe.dashboard import Hub, create_app, loopback_hosts
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import PASSWORD, RedisServer, free_port
from tests.live_feed import PlayerFeed, beat_player, seed_system
from tests.processes import wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TILES = ["tile-cinematic", "tile-hood", "tile-convcam", "tile-loss", "tile-score", "tile-server", "tile-player"]


@pytest.fixture
def dashboard(r: redis.Redis, keys: Keys) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, as `charles dashboard` serves it."""
    import uvicorn

    port = free_port()
    hub = Hub(r, keys, refresh_s=0.5, frame_fps=20.0)
    app = create_app(hub, allowed_hosts=loopback_hosts("127.0.0.1"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "uvicorn")
    yield f"http://127.0.0.1:{port}"
    hub.close()  # as `charles dashboard` does on SIGINT/SIGTERM
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian chromium + chromium-driver not installed (scripts/install-test-deps.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for a browser or driver online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1600,900"):
        opts.add_argument(arg)
    opts.page_load_strategy = "eager"  # the MJPEG <img>s never finish loading
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def fetch(url: str, host: str | None = None, method: str = "GET", limit: int = 1 << 20) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(limit)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def first_chunk(url: str, marker: bytes, limit: int = 400_000) -> bytes:
    """Read a never-ending response (SSE, MJPEG) until `marker` appears."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = b""
        while marker not in data and len(data) < limit:
            data += resp.read1(65536)
        return data


def decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_stream_layout_live_in_chromium(r: redis.Redis, keys: Keys, dashboard: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    seed_system(r, keys, ["player-a", "player-b"])
    feeds = [PlayerFeed(r, keys, pid) for pid in ("player-a", "player-b")]
    for feed in feeds:
        feed.start()
    try:
        time.sleep(0.6)
        assert not r.exists(keys.frame("player-a", "cinematic")), "frames published with nobody watching"

        browser.get(dashboard + "/")
        for tile in TILES:
            assert browser.find_element(By.ID, tile).is_displayed(), tile
        wait_until(lambda: "live" in browser.find_element(By.ID, "tile-cinematic").get_attribute("class"),
                 what="the first cinematic frame")
        for tile in ("tile-hood", "tile-convcam"):
            wait_until(lambda t=tile: "live" in browser.find_element(By.ID, t).get_attribute("class"), what=tile)
        cam = browser.find_element(By.ID, "cam-cinematic")
        first = decode(cam.screenshot_as_png)

        def moved() -> bool:
            now = decode(cam.screenshot_as_png)
            return now.shape == first.shape and float(np.abs(now.astype(int) - first).mean()) > 1.0

        wait_until(moved, 10, "the camera image to change between two screenshots")
        assert first.std() > 10  # a picture, not a blank tile

        def text(element_id: str) -> str:
            return browser.find_element(By.ID, element_id).text

        wait_until(lambda: "v7" in text("player-console") and "model_0003_test" in text("player-console"),
                 what="player console with the model version")
        assert "v7" in text("server-console") and "Server / Trainer" in text("server-console")
        assert "model_0003_test v7" in text("model-badge") and "created" in text("model-badge")
        assert wait_until(lambda: browser.execute_script("return loss.length"), what="loss points") >= 30

        # a new version reaches the consoles and the corner badge
        r.hset(keys.weights_latest, mapping={"version": 8, "created": time.time()})
        for feed in feeds:
            feed.version = 8
        wait_until(lambda: "v8" in text("player-console") and "v8" in text("server-console")
                 and "v8" in text("model-badge"), what="version 8 on the page")

        # several players: the picker switches the cameras
        picker = Select(browser.find_element(By.ID, "player-picker"))
        assert [o.get_attribute("value") for o in picker.options] == ["player-a", "player-b"]
        assert not r.exists(keys.frame("player-b", "hood"))
        picker.select_by_value("player-b")
        wait_until(lambda: "player-b" in cam.get_attribute("src"), what="cameras of player-b")
        wait_until(lambda: r.exists(keys.frame("player-b", "hood")), what="player-b publishing once watched")
        wait_until(lambda: "player-b" in text("player-console"), what="player-b's console")
        assert PASSWORD not in browser.page_source and "redis://" not in browser.page_source
    finally:
        for feed in feeds:
            feed.halt()


def seed_scores(r: redis.Redis, keys: Keys) -> None:
    """Six scored versions with intervals (v4 is best), the baseline's, and the best pointer."""
    from pipeline.evaluate.scoreboard import record_scores

    ratios = {2: (0.31, 0.12, 0.52), 3: (0.48, 0.30, 0.66), 4: (0.93, 0.78, 1.07), 5: (0.71, 0.52, 0.9),
              6: (0.85, 0.66, 1.02), 7: (0.88, 0.7, 1.05)}
    for v, (ratio, low, high) in ratios.items():
        record_scores(r, keys, v, {
            "version": v, "batches": 50 * v, "ratio_to_npc": ratio, "metrics": {},
            "intervals": {"ratio_to_npc": [low, high], "level": 0.9},
            "baseline": {"ratio_to_npc": 0.17, "intervals": {"ratio_to_npc": [0.1, 0.25]}}})
    r.hset(keys.weights_best, mapping={"version": 4, "score": "0.93"})


def test_score_tile_plots_versions_with_intervals(r: redis.Redis, keys: Keys, dashboard: str, browser: Any,
                                                  tmp_path: Any) -> None:
    from selenium.webdriver.common.by import By

    seed_system(r, keys, ["player-a"], version=7)
    beat_player(r, keys, "player-b", 5, "model_0003_test")  # a player that follows `best` or lags behind
    browser.get(dashboard + "/")
    chart = browser.find_element(By.ID, "score-chart")
    blank = decode(chart.screenshot_as_png)
    wait_until(lambda: browser.execute_script("return last && last.ok"), what="a first state")
    assert browser.execute_script("return last.scores.points.length") == 0
    seed_scores(r, keys)
    scores = wait_until(lambda: browser.execute_script("return last.scores.points.length === 6 && last.scores"),
                      what="six scored versions on the page")
    assert scores["best"] == 4 and scores["baseline"] == {"ratio": 0.17, "low": 0.1, "high": 0.25}
    assert scores["points"][2] == {"version": 4, "batches": 200, "ratio": 0.93, "low": 0.78, "high": 1.07}
    assert sorted((p["id"], p["version"]) for p in scores["players"]) == [("player-a", 7), ("player-b", 5)]
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    png = decode(chart.screenshot_as_png)
    assert png.shape == blank.shape

    def colour(bgr: tuple[int, int, int]) -> int:  # pixels of one of the chart's colours (BGR)
        return int((np.abs(png.astype(int) - bgr).sum(axis=2) < 40).sum())

    assert colour((247, 195, 79)) > 40  # the versions' points and interval bars (#4fc3f7)
    assert colour((106, 187, 102)) > 20  # the best version, in green (#66bb6a)
    assert colour((216, 147, 206)) > 20  # the players' markers (#ce93d8)
    assert colour((230, 230, 230)) > 20  # the NPC line at 1.0 and the labels
    assert float(np.abs(png.astype(int) - blank).mean()) > 1.0
    # the Server/Trainer console of `charles console` shows the same, in text
    from pipeline.observe.consoles import score_console, to_text
    from pipeline.observe.status import snapshot

    text = to_text(score_console(snapshot(r, keys)), width=110)
    assert "v4" in text and "0.93 [0.78, 1.07]" in text and "best" in text and "<- player-b" in text


def test_http_is_read_only_and_leaks_no_secret(redis_server: RedisServer, r: redis.Redis, keys: Keys,
                                               dashboard: str) -> None:
    seed_system(r, keys, ["player-a"])
    feed = PlayerFeed(r, keys, "player-a")
    feed.start()
    try:
        bodies = [fetch(dashboard + path)[1] for path in ("/", "/app.js", "/app.css", "/api/state", "/healthz")]
        bodies.append(first_chunk(dashboard + "/events", b"\n\ndata:"))
        bodies.append(first_chunk(dashboard + "/stream/player-a/hood", b"\xff\xd9"))  # one whole JPEG
        status, jpeg = wait_until(lambda: (res := fetch(dashboard + "/frame/player-a/convcam.jpg"))[0] == 200
                                and res, what="a convcam frame")
        assert jpeg[:2] == b"\xff\xd8"
        bodies.append(jpeg)
    finally:
        feed.halt()
    port = str(redis_server.port).encode()
    for body in bodies:
        assert PASSWORD.encode() not in body and b"redis://" not in body and b":" + port not in body
    state = bodies[3].decode()
    assert '"model_version":7' in state and "model_0003_test" in state

    assert fetch(dashboard + "/", method="POST")[0] == 405
    assert fetch(dashboard + "/api/state", method="DELETE")[0] == 405
    assert fetch(dashboard + "/", host="evil.example")[0] == 400  # DNS rebinding guard on loopback
    assert fetch(dashboard + "/frame/player-a/secret.jpg")[0] == 404
    assert fetch(dashboard + "/stream/player%3Aa/hood")[0] == 404
    _, page = fetch(dashboard + "/")
    assert b"script-src 'self'" not in page  # the CSP is a header, not in the page
    with urllib.request.urlopen(dashboard + "/", timeout=5) as resp:
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
