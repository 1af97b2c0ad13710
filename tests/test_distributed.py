"""Data-parallel training on two CPU ranks (gloo): the ranks step only when all hold a
batch, and DDP keeps their weights equal. GPU scaling is `charles bench ddp`'s to measure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.train.distributed import DistributedContext
from tests.processes import ROOT

RANK = """
import json, sys, torch
from pipeline.train.distributed import DistributedContext
ctx = DistributedContext.from_env()
device = ctx.init()
torch.manual_seed(0)
model = ctx.wrap(torch.nn.Linear(3, 1), device)
out = {"is_main": ctx.is_main, "device": str(device),
       "one_short": ctx.all_ready(ctx.rank == 0, device), "all": ctx.all_ready(True, device)}
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.full((4, 3), float(ctx.rank + 1))  # each rank its own batch
model(x).sum().backward()
opt.step()
out["weights"] = [round(v, 6) for v in model.module.weight.detach().flatten().tolist()]
ctx.close()
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_agree_on_readiness_and_keep_equal_weights(tmp_path: Path) -> None:
    procs = _start_ranks(RANK, _free_port())
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    main, other = results
    assert main["is_main"] and not other["is_main"] and main["device"] == "cpu"
    assert not main["one_short"] and not other["one_short"]  # one rank short: nobody steps
    assert main["all"] and other["all"]
    assert main["weights"] == other["weights"]  # gradients averaged over both ranks' batches


LEAVER = """
import os, sys, time, torch
from pipeline.train.distributed import DistributedContext
ctx = DistributedContext.from_env()
device = ctx.init()
ctx.all_ready(True, device)
if ctx.rank == 1:
    os._exit(0)  # killed: never reaches close()
started = time.monotonic()
ctx.close()
print(round(time.monotonic() - started, 1))
"""


def _start_ranks(script: str, port: int) -> list[subprocess.Popen[str]]:
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "",
               "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def test_closing_with_a_rank_gone_does_not_hang() -> None:
    """close() meets the other ranks at a barrier before tearing the group down; a rank that
    was killed first must not keep the survivor waiting past CLOSE_BARRIER_S."""
    main, leaver = _start_ranks(LEAVER, _free_port())
    leaver.communicate(timeout=120)
    out, err = main.communicate(timeout=120)
    assert main.returncode == 0, err[-3000:]
    assert float(out.strip().splitlines()[-1]) < 35.0


def test_a_plain_process_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert DistributedContext.from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert DistributedContext.from_env() is None
