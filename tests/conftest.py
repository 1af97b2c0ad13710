"""Shared fixtures: one real redis-server per test session, a unique key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def keys() -> Keys:
    """A unique prefix per test, so tests share one server without seeing each other."""
    return Keys(f"test-{uuid.uuid4().hex[:10]}:")
