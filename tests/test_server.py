"""Server routing: valid sets reach the buffer exactly once, bad ones are dead-lettered."""

from __future__ import annotations

import collections
import math
import random
import time

import msgpack
import msgpack_numpy
import numpy as np
import pytest
import redis

from pipeline.collect.handoff import EpisodeSpec
from pipeline.errors import ConfigError
from pipeline.games.base import WEATHERS, Capabilities, Environment
from pipeline.games.sim import SimGame
from pipeline.serve.server import Server, check_environment, sample_environment
from pipeline.wire.config_store import fetch_config
from pipeline.wire.keys import RECORDER_GROUP, SERVER_GROUP, Keys, sample_id
from pipeline.wire.manifest import SampleSet, manifest
from pipeline.wire.presence import Presence, live_workers
from tests.factories import TEST_COLLECTOR, publish_entry, sample_set, stored_rows, tiny_config


def make_server(r: redis.Redis, keys: Keys, consumer: str = "server-1", **cfg: object) -> Server:
    server = Server(r, keys, tiny_config(**cfg), consumer=consumer, seed=1, rescan_s=0)
    for output in server.outputs:  # the test collector's streams exist, as after its first publish
        server.routers[0].streams.create_group(keys.stream(output, TEST_COLLECTOR))
    server.setup()
    return server


def test_config_published_and_versioned(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    cfg, version = fetch_config(r, keys)
    assert cfg == server.config and version == 1
    server.setup()  # same config: same version
    assert fetch_config(r, keys)[1] == 1
    make_server(r, keys, buffers={"capacity": 30})
    assert fetch_config(r, keys)[1] == 2


def test_valid_set_routed_and_acked(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    s = sample_set(server.config, "steering", 5)
    publish_entry(r, keys, "steering", s.entry())
    assert server.route_once(block_ms=10) == 1
    assert r.scard(keys.buffer("steering")) == 5
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 0
    assert r.hget(keys.counters, "samples_routed:steering") == b"5"


def _bad_entries(server: Server) -> list[dict[str, bytes]]:
    cfg = server.config
    good = sample_set(cfg, "steering", 3)
    nan = sample_set(cfg, "steering", 3)
    nan.columns["targets"][0, 0] = np.nan
    wrong_shape = sample_set(cfg, "steering", 3)
    wrong_shape.columns["frames"] = np.zeros((3, 1, 10, 10, 3), np.uint8)
    wrong_dtype = sample_set(cfg, "steering", 3)
    wrong_dtype.columns["speed"] = np.array(["fast"] * 3)
    unknown = sample_set(cfg, "steering", 3)
    unknown.output = "flying"
    other_stream = sample_set(cfg, "acceleration_braking", 3)
    obj = msgpack.packb({"v": 2, "columns": {"x": np.array([1, "a"], dtype=object)}}, default=msgpack_numpy.encode)
    return [
        nan.entry(),
        wrong_shape.entry(),
        wrong_dtype.entry(),
        unknown.entry(),
        other_stream.entry(),
        {**good.entry(), "meta": obj},
        {**good.entry(), "r0": good.entry()["r0"][:-20]},
        {b"other": b"x"},
    ]


def test_bad_entries_dead_lettered_and_server_keeps_going(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    bad = _bad_entries(server)
    for fields in bad:
        publish_entry(r, keys, "steering", fields)
    publish_entry(r, keys, "steering", sample_set(server.config, "steering", 4).entry())
    handled = 0
    while handled < len(bad) + 1:
        handled += server.route_once(block_ms=10)
    assert r.scard(keys.buffer("steering")) == 4
    assert r.xlen(keys.deadletter) == len(bad)
    reasons = [e[1][b"reason"].decode() for e in r.xrange(keys.deadletter)]
    assert any("NaN" in x for x in reasons) and any("not allowed" in x for x in reasons)
    assert any("unknown output" in x for x in reasons) and any("arrived on" in x for x in reasons)
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 0


def test_crash_before_ack_reclaimed_once(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    for seed in range(3):
        publish_entry(r, keys, "steering", sample_set(server.config, "steering", 2, seed).entry())
    # a server reads the entries and dies before routing them
    r.xreadgroup(SERVER_GROUP, "server-1", {keys.stream("steering", TEST_COLLECTOR): ">"}, count=10)
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 3
    restarted = make_server(r, keys)
    restarted.route_once(block_ms=10)
    assert r.scard(keys.buffer("steering")) == 6
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 0
    # routing an entry twice cannot duplicate its samples
    entry_id, fields = r.xrange(keys.stream("steering", TEST_COLLECTOR))[0]
    restarted.routers[0].handle_entry(keys.stream("steering", TEST_COLLECTOR), entry_id, fields)
    assert r.scard(keys.buffer("steering")) == 6


def test_other_consumers_pending_claimed(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys, consumer="server-2")
    publish_entry(r, keys, "steering", sample_set(server.config, "steering", 2).entry())
    r.xreadgroup(SERVER_GROUP, "dead-server", {keys.stream("steering", TEST_COLLECTOR): ">"}, count=10)
    import pipeline.wire.consumer_group as mod

    old = mod.RECLAIM_IDLE_MS
    mod.RECLAIM_IDLE_MS = 0
    try:
        server.route_once(block_ms=10)
    finally:
        mod.RECLAIM_IDLE_MS = old
    assert r.scard(keys.buffer("steering")) == 2


def test_own_pending_past_a_run_of_trimmed_entries_is_routed(r: redis.Redis, keys: Keys) -> None:
    """A restarted server acknowledges pending entries trimmed away (no fields left) and goes
    on to the pending entries after them, however many trimmed ones come first."""
    server = make_server(r, keys)
    for seed in range(70):
        publish_entry(r, keys, "steering", sample_set(server.config, "steering", 2, seed).entry())
    r.xreadgroup(SERVER_GROUP, "server-1", {keys.stream("steering", TEST_COLLECTOR): ">"}, count=100)  # then it died
    r.xtrim(keys.stream("steering", TEST_COLLECTOR), maxlen=1, approximate=False)  # the first 69 are gone while pending
    restarted = make_server(r, keys)
    restarted.route_once(block_ms=10)
    assert r.scard(keys.buffer("steering")) == 2  # the 70th set, behind 69 trimmed entries
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 0


def test_full_buffer_evicts_oldest_and_backlog_is_bounded(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys, buffers={"capacity": 4, "stream_maxlen": 3})
    sets = [sample_set(server.config, "steering", 2, seed) for seed in range(10)]
    for s in sets:
        publish_entry(r, keys, "steering", s.entry())
    for _ in range(3):
        server.route_once(block_ms=10)
    dropped = int(r.hget(keys.counters, "sets_dropped:steering") or 0)
    routed = int(r.hget(keys.counters, "sets_routed:steering"))
    assert (dropped, routed) == (7, 3)  # a backlog beyond stream_maxlen: the oldest unread sets go, counted
    assert server.stream_lag(keys.stream("steering", TEST_COLLECTOR)) == 0  # a full buffer keeps reading ...
    assert r.scard(keys.buffer("steering")) == 4  # ... and evicts its oldest samples
    assert {i.decode() for i in r.smembers(keys.buffer("steering"))} == {
        sample_id(TEST_COLLECTOR, s.set_id, i) for s in sets[-2:] for i in range(2)}
    assert server.buffers.replay_stats()["steering"]["evicted"] == 2
    assert stored_rows(r, keys, "steering") == 4  # evicted rows are deleted with their ids


def test_jobs_supplied_only_while_data_wanted(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys, buffers={"capacity": 2, "samples_per_insert": 1.0})
    assert server.supply_jobs() == 0  # nobody connected yet
    Presence(r, keys, "collector", "c1").beat(state="idle")
    assert server.supply_jobs() == 1  # an idle collector gets one episode, on its own list
    assert server.supply_jobs() == 0
    assert 0 < r.ttl(keys.jobs("c1")) <= server.config.collection.job_timeout_s  # unclaimed, it expires
    spec = EpisodeSpec.from_json(r.rpop(keys.jobs("c1")))
    assert spec.environment.map_seed not in server.config.collection.held_out_seeds
    Presence(r, keys, "collector", "c1").beat(state="collecting")
    assert server.supply_jobs() == server.config.collection.jobs_ahead  # the next one waits while it runs
    r.delete(keys.jobs("c1"))
    for output in server.outputs:
        publish_entry(r, keys, output, sample_set(server.config, output, 2).entry())
    server.route_once(block_ms=10)
    server.route_once(block_ms=10)
    assert server.supply_jobs() == 0  # every buffer is full


def test_held_out_seeds_never_sampled() -> None:
    cfg = tiny_config(collection={"map_seeds": [1, 20], "held_out_seeds": [9001]}).collection
    rng = random.Random(0)
    seeds = {sample_environment(cfg, rng, SimGame.capabilities).map_seed for _ in range(2000)}
    assert seeds <= set(range(1, 21)) and 9001 not in seeds


def test_only_what_the_backend_varies_is_sampled(r: redis.Redis, keys: Keys) -> None:
    """The server draws only the environment fields the backend declares: a plug-in that
    varies the weather gets the weather and an episode seed, every other field its default;
    the simulator still gets every field."""
    server = make_server(r, keys, game={"backend": "tests.lane_game:LaneGame"}, collection={"model_drives": 0.0})
    envs = [server.next_episode().environment.to_dict() for _ in range(50)]
    default = Environment().to_dict()
    assert {e["weather"] for e in envs} == set(WEATHERS) and len({e["episode_seed"] for e in envs}) > 40
    assert all({k: v for k, v in e.items() if k not in ("weather", "episode_seed")}
               == {k: v for k, v in default.items() if k not in ("weather", "episode_seed")} for e in envs)
    sim = [sample_environment(server.config.collection, random.Random(i), SimGame.capabilities) for i in range(50)]
    assert len({e.car for e in sim}) == 3 and len({e.map_seed for e in sim}) > 40
    assert len({e.npc_style for e in sim}) == 3 and len({e.time_of_day for e in sim}) > 40


def test_npc_styles_from_the_config() -> None:
    """`collection.npc_styles` chooses the styles episodes draw from, a repeat weighing it more;
    left empty, every style the backend declares comes, "normal" twice as often."""
    def styles(npc_styles: list[str]) -> collections.Counter[str]:
        cfg = tiny_config(collection={"npc_styles": npc_styles}).collection
        rng = random.Random(0)
        return collections.Counter(sample_environment(cfg, rng, SimGame.capabilities).npc_style for _ in range(3000))
    assert set(styles(["normal"])) == {"normal"}
    calm_twice = styles(["calm", "calm", "aggressive"])
    assert set(calm_twice) == {"calm", "aggressive"} and 1.8 < calm_twice["calm"] / calm_twice["aggressive"] < 2.2
    default = styles([])
    assert set(default) == {"calm", "normal", "aggressive"} and 1.8 < default["normal"] / default["calm"] < 2.2


def test_collection_choices_outside_the_backend_refused(r: redis.Redis, keys: Keys) -> None:
    with pytest.raises(ConfigError, match=r"collection\.cars: \['bus'\] not among the backend's"):
        make_server(r, keys, collection={"cars": ["sedan", "bus"]})
    with pytest.raises(ConfigError, match=r"collection\.npc_styles: \['reckless'\] not among the backend's"):
        make_server(r, keys, collection={"npc_styles": ["normal", "reckless"]})
    with pytest.raises(ConfigError, match=r"collection\.weathers: \['fog'\] not among the backend's"):
        check_environment(tiny_config(collection={"weathers": ["clear", "fog"]}).collection,
                          Capabilities(environment={"weather": ("clear", "rain")}))
    # fields the backend does not vary are not checked: they are never sampled
    check_environment(tiny_config(collection={"cars": ["bus"]}).collection, Capabilities())


def test_the_speed_limit_comes_from_the_config(r: redis.Redis, keys: Keys) -> None:
    """Issue 16: the sample check capped speed at 150 m/s for every game; `[game] max_speed_mps`
    sets it (a faster game raises it)."""
    for limit, routed in ((150.0, 0), (300.0, 4)):
        server = make_server(r, keys, game={"max_speed_mps": limit})
        fast = sample_set(server.config, "steering", 4)
        fast.columns["speed"][:] = 200.0
        publish_entry(r, keys, "steering", fast.entry())
        while not server.route_once(block_ms=10):
            pass
        assert r.scard(keys.buffer("steering")) == routed
    reasons = [e[1][b"reason"].decode() for e in r.xrange(keys.deadletter)]
    assert len(reasons) == 1 and "speed: values beyond 150.0 m/s" in reasons[0]


def test_routed_sets_trimmed_to_keep(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys, buffers={"capacity": 1000, "stream_keep": 2})
    for seed in range(30):
        publish_entry(r, keys, "steering", sample_set(server.config, "steering", 2, seed).entry())
    while server.route_once(block_ms=10):
        pass
    server.trim_streams()
    # approximate trimming frees whole stream nodes: far fewer than 30 are left, unread ones never go
    assert r.xlen(keys.stream("steering", TEST_COLLECTOR)) < 30
    assert r.scard(keys.buffer("steering")) == 60


def test_set_published_twice_lands_once(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    s = sample_set(server.config, "steering", 3)
    publish_entry(r, keys, "steering", s.entry())
    publish_entry(r, keys, "steering", s.entry())  # resent after a lost acknowledgement
    while server.route_once(block_ms=10):
        pass
    assert r.scard(keys.buffer("steering")) == 3


def test_rows_renamed_into_the_buffer_and_checked_against_their_heads(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    good, swapped, missing = (sample_set(server.config, "steering", 3, seed) for seed in (1, 2, 3))
    publish_entry(r, keys, "steering", good.entry())
    publish_entry(r, keys, "steering", swapped.entry())
    r.set(keys.incoming(TEST_COLLECTOR, swapped.set_id, 1), good.entry()["r0"])  # changed after the manifest went out
    r.xadd(keys.stream("steering", TEST_COLLECTOR), manifest(missing.entry()))  # a manifest whose rows never arrived
    for _ in range(3):
        server.route_once(block_ms=10)
    assert r.smembers(keys.buffer("steering")) == {sample_id(TEST_COLLECTOR, good.set_id, i).encode() for i in range(3)}
    assert r.get(keys.buffer_row("steering", sample_id(TEST_COLLECTOR, good.set_id, 2))) == good.entry()["r2"]  # byte for byte
    assert not list(r.scan_iter(match=keys.incoming(TEST_COLLECTOR, "*") + "*"))  # renamed, or deleted with the refusal
    reasons = [e[1][b"reason"].decode() for e in r.xrange(keys.deadletter)]
    assert reasons == ["row 1 is missing or differs from its header (expired?)",
                       "row 0 is missing or differs from its header (expired?)"]
    assert r.xpending(keys.stream("steering", TEST_COLLECTOR), SERVER_GROUP)["pending"] == 0


def test_rows_copied_while_a_recorder_reads_the_streams(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys)
    r.xgroup_create(keys.stream("steering", TEST_COLLECTOR), RECORDER_GROUP, id="0")
    s = sample_set(server.config, "steering", 2)
    publish_entry(r, keys, "steering", s.entry(), ttl=600)
    server.route_once(block_ms=10)
    assert r.scard(keys.buffer("steering")) == 2
    assert r.get(keys.incoming(TEST_COLLECTOR, s.set_id, 0)) == r.get(keys.buffer_row("steering", sample_id(TEST_COLLECTOR, s.set_id, 0)))
    assert 0 < r.ttl(keys.incoming(TEST_COLLECTOR, s.set_id, 0)) <= 600  # left for the recorder, still bounded


def test_forged_collector_presence_gets_no_jobs(r: redis.Redis, keys: Keys) -> None:
    """Issue 15 #8: 3000 presence keys without a TTL (or with a long one) made the server
    queue 3001 jobs; only heartbeats as `Presence.beat` writes them count."""
    server = make_server(r, keys)
    pipe = r.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(keys.presence("collector", f"fake-{i}"), "{}")
    pipe.set(keys.presence("collector", "long-lived"), "{}", ex=10**6)
    pipe.execute()
    Presence(r, keys, "collector", "honest").beat(state="idle")
    assert live_workers(r, keys, "collector") == ["honest"]
    assert server.supply_jobs() == 1 and r.llen(keys.jobs("honest")) == 1


def _with_row(entry: dict[str, bytes], i: int, **header_changes: object) -> dict[str, bytes]:
    """The entry with row i's header changed (and the meta's byte count for it)."""
    from pipeline.wire import codec
    from pipeline.wire.rows import ROW_MAGIC, decode_row_header, row_head_size

    row = entry[f"r{i}"]
    head = row[: row_head_size(row)]
    header, shape = decode_row_header(head, len(row))
    header.update(frames_shape=shape, **header_changes)
    packed = codec.encode(header)
    new_row = ROW_MAGIC + len(packed).to_bytes(4, "little") + packed + row[len(head):]
    meta = codec.decode(entry["meta"])
    meta["row_bytes"][i] = len(new_row)
    return {**entry, "meta": codec.encode(meta), f"r{i}": new_row}


def test_bloated_rows_and_manifests_refused_before_decoding(r: redis.Redis, keys: Keys) -> None:
    """Issue 15 #7: empty columns were reshaped from anything (10,000 empty lists passed), and
    manifests far beyond what the config's sets need were decoded and routed."""
    server = make_server(r, keys)
    assert server.config.inputs.history_length == 0  # history is an empty column here
    good = sample_set(server.config, "steering", 3, seed=1).entry()
    cases = {
        "beyond the": _with_row(good, 1, history=[[] for _ in range(10_000)]),
        "must be empty": _with_row(good, 2, history=[[]]),
        "exceeds the": {**good, "meta": good["meta"] + b"\0" * server.routers[0].schema.max_manifest_bytes},
    }
    ids = {publish_entry(r, keys, "steering", fields).decode(): reason for reason, fields in cases.items()}
    publish_entry(r, keys, "steering", sample_set(server.config, "steering", 3, seed=2).entry())
    while server.route_once(block_ms=10):
        pass
    letters = {f[b"entry"].decode(): f[b"reason"].decode() for _, f in r.xrange(keys.deadletter)}
    assert set(letters) == set(ids)
    for entry, reason in ids.items():
        assert reason in letters[entry], letters[entry]
    assert r.scard(keys.buffer("steering")) == 3  # the good set still went in


def test_drained_streams_of_departed_collectors_are_deleted(r: redis.Redis, keys: Keys) -> None:
    """Each restarted collector of `make run` has a new id and so new streams: once the one
    that left is drained, its streams go; a live collector's, or one with unread sets, stay."""
    server = make_server(r, keys)
    cfg = server.config
    for name in ("gone", "alive", "gone-unread"):
        s = sample_set(cfg, "steering", 2, seed=len(name))
        publish_entry(r, keys, "steering", SampleSet("steering", name, "e", s.columns, {}).entry(), collector=name)
    server.route_once(block_ms=10)
    publish_entry(r, keys, "steering", SampleSet("steering", "gone-unread", "e", sample_set(cfg, "steering", 2).columns,
                                                 {}).entry(), collector="gone-unread")
    Presence(r, keys, "collector", "alive").beat(state="idle")
    live = {"alive"}
    server.routers[0].forget_departed(live)
    assert r.exists(keys.stream("steering", "gone"))  # silent for less than DEPARTED_IDLE_S
    server.routers[0].forget_departed(live, idle_s=0)
    assert not r.exists(keys.stream("steering", "gone"))
    assert r.exists(keys.stream("steering", "alive")) and r.exists(keys.stream("steering", "gone-unread"))
    assert server.route_once(block_ms=10) == 1  # what was left is still routed


def _publish_as(r: redis.Redis, keys: Keys, server: Server, collector: str, samples: int, seed: int) -> None:
    """`samples` per output from one collector, in sets of 4, routed."""
    from pipeline.collect.episode import SetPublisher

    publisher = SetPublisher(r, keys, 1000, 1000)
    for k in range(samples // 4):
        for output in server.outputs:
            publisher.publish(SampleSet(output, collector, f"e{seed}", sample_set(
                server.config, output, 4, seed=seed * 1000 + k).columns, {}))
    while server.route_once(block_ms=10):
        pass


def test_a_flood_cannot_keep_the_other_collectors_from_episodes(r: redis.Redis, keys: Keys) -> None:
    """A collector flooding valid sets kept the buffers full and the trainer's bank topped up,
    so the server handed nobody an episode: the honest collectors stood idle. One that another's
    flood keeps under half its fair share now gets episodes anyway; the flooder does not."""
    server = make_server(r, keys, buffers={"capacity": 40, "collector_share": 1.5, "stream_maxlen": 1000})
    for name in ("flooder", "honest"):
        Presence(r, keys, "collector", name).beat(state="idle")
    server.supply_jobs()
    r.delete(keys.jobs("flooder"), keys.jobs("honest"))  # both took their first episode
    server.starved_window_s = 1.0  # a minute in the server: the test does not wait that long
    _publish_as(r, keys, server, "honest", 12, seed=1)
    time.sleep(1.2)  # the honest collector's sets are older than the window ...
    _publish_as(r, keys, server, "flooder", 80, seed=2)  # ... and the flood fills its quota of 30 in it
    assert r.scard(keys.buffer("steering")) == 40 and not server.wants_data()  # full, the bank topped up
    assert server.supply_jobs() == 1
    assert r.llen(keys.jobs("honest")) == 1 and r.llen(keys.jobs("flooder")) == 0


def test_an_honest_fleet_resting_under_the_replay_limit_gets_no_episodes(r: redis.Redis, keys: Keys) -> None:
    """The rescue above must not undo the replay limit's rest: nobody filled its quota, so nobody
    counts as starved, however unequal their shares."""
    server = make_server(r, keys, buffers={"capacity": 40, "collector_share": 1.5, "stream_maxlen": 1000})
    for name in ("fast", "slow"):
        Presence(r, keys, "collector", name).beat(state="idle")
    _publish_as(r, keys, server, "slow", 12, seed=1)
    _publish_as(r, keys, server, "fast", 28, seed=2)
    assert not server.wants_data()
    assert server.supply_jobs() == 0


def test_a_server_that_hands_out_no_episodes_still_knows_its_shards_quotas(r: redis.Redis, keys: Keys) -> None:
    """Only the primary server hands out episodes; the live collectors that set each shard's
    quota were read there alone, so a server of shard 1 routed with no cap at all."""
    import threading

    from pipeline.wire.keys import shard_of

    server = Server(r, keys, tiny_config(buffers={"shards": 2, "capacity": 40}), consumer="server-b", shards=[1],
                    rescan_s=0)
    names = [f"collector-{i}" for i in range(6)]
    for name in names:
        Presence(r, keys, "collector", name).beat(state="idle")
    server.run(threading.Event(), Presence(r, keys, "server", "server-b"), deadline=time.monotonic() + 1.5)
    mine = sum(1 for name in names if shard_of(name, 2) == 1)
    assert server.buffers.shards[1].live_collectors == mine > 0
    assert server.buffers.shards[1].collector_quota == min(20, math.ceil(20 * 1.5 / mine))
