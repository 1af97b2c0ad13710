"""`charles tensorboard` answers only loopback Host names (issue 15 #11: DNS rebinding)."""

from __future__ import annotations

import http.client
from pathlib import Path

from pipeline.wire.local_redis import free_port
from tests.processes import Roles, wait_until


def get(port: int, host_header: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/data/runs", headers={"Host": host_header})
        return conn.getresponse().status
    finally:
        conn.close()


def test_rebound_host_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    port = free_port()
    roles = Roles("redis://127.0.0.1:1/0", "tb-test:", tmp_path)  # TensorBoard needs no Redis
    roles.start("tensorboard", "tensorboard", "--logdir", str(tmp_path / "runs"), "--port", str(port))
    try:
        def answers() -> bool:
            try:
                return get(port, f"127.0.0.1:{port}") == 200
            except OSError:
                return False

        wait_until(answers, 60, "tensorboard to answer", roles)
        assert get(port, f"localhost:{port}") == 200
        assert get(port, f"evil.example:{port}") == 400  # a rebound name: refused
        assert get(port, "evil.example") == 400
    finally:
        roles.stop_all()
