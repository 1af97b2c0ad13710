"""safe_url: no password reaches a log line or an error message, wherever the URL carries it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.wire.local_redis import free_port
from pipeline.wire.redis_conn import safe_url

SECRET = "s3cret-Pa55word-never-printed"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://127.0.0.1:6479/0?password={SECRET}", "redis://127.0.0.1:6479/0?password=***"),
    (f"redis://collector:{SECRET}@host:6479/0", "redis://collector:***@host:6479/0"),
    (f"redis://:{SECRET}@host/0?password={SECRET}&db=0", "redis://:***@host/0?password=***&db=0"),
    (f"rediss://u:{SECRET}@h/0?ssl_cert_reqs=none&Password={SECRET}#x", "rediss://u:***@h/0?ssl_cert_reqs=none&Password=***#x"),
    (f"unix:///run/redis.sock?db=0&password={SECRET}", "unix:///run/redis.sock?db=0&password=***"),
    (f"redis://u:{SECRET}/with/slashes@h/0", "redis://u:***@h/0"),
    ("redis://127.0.0.1:6479/0", "redis://127.0.0.1:6479/0"),
])
def test_safe_url_hides_every_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert SECRET not in safe_url(url)


def test_a_role_never_prints_a_query_string_password(tmp_path: Path) -> None:
    """`redis://host/0?password=...` (redis-py reads it) in an error message printed by `charles status`."""
    url = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}"  # nothing listens: the error names the URL
    env = {**os.environ, "CHARLES_REDIS_URL": url, "CHARLES_ENV_FILE": str(tmp_path / "no.env")}
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "status"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "cannot reach Redis at redis://127.0.0.1" in res.stderr
    assert SECRET not in res.stdout + res.stderr
