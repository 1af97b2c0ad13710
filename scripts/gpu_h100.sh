#!/usr/bin/env bash
# The two GPU runs of issue 7, each one self-contained command on the H100 machine (bare image
# with python3 + torch; the missing wheels, redis-server and its libraries travel in .gpu/, built
# here by scripts/gpu_pack.sh):
#
#   scripts/gpu_h100.sh curve     # (b) learning curve: configs/h100.toml (env SPI: its samples_per_insert, 16;
#                                 #     env SETS: "key=value;key=value" replaces other keys' lines) from nothing,
#                                 #     11 collectors, trainer on cuda, 2 evaluators, 7 minutes
#   scripts/gpu_h100.sh replay    # side by side: h100.toml with samples_per_insert 1 and 8 (env SPI; env EMA
#                                 #     sets the second one's ema_decay),
#                                 #     5 collectors each, MINUTES (6) each
#   scripts/gpu_h100.sh default   # the shipped default model: offline NPC data on 14 cores, Learner
#                                 #     on cuda, snapshots scored closed-loop, the best one kept, then
#                                 #     a DAgger round (env COLLECT_MIN TRAIN_MIN DAGGER_ROUNDS DAGGER_MIN
#                                 #     DAGGER_TRAIN_MIN DAGGER_BETA SNAPSHOT_EVERY BUDGET_S)
#   scripts/gpu_h100.sh screen    # issue 20: 2-core `make run` systems side by side, each pinned to 2 CPUs (taskset; env CORES_PER_SYSTEM),
#                                 #     the default config and variants of it (env VARIANTS: "name:key=value;key=value ..."),
#                                 #     MINUTES (15) each, then every version from SCORE_FROM_MIN scored on all cores
#   scripts/gpu_h100.sh codecs    # issue 19: `charles bench trainer --device cuda` per frame codec (raw, zstd, jpeg),
#                                 #     default and xception_270x480, two rounds alternating
#   scripts/gpu_h100.sh fleet     # issue 19: `charles bench fleet` on the 16 cores: a 3-node Redis Cluster, 1/2/3
#                                 #     shards, synthetic collectors; default config and xception_270x480 (zstd)
#                                 #     (env SECONDS_PER_ROUND (15), COLLECTORS per shard (0: by the cores), RATE,
#                                 #     FLEET_CONFIGS: the configs/ names to run, default "default xception_270x480")
#
# Runs longer than one device call (10 min), on a machine that stays warm between calls:
#   scripts/gpu_h100.sh background curve   # a copy of the checkout in /tmp/bg runs `curve` detached
#   scripts/gpu_h100.sh await [SECONDS]     # waits (default 570 s) and prints its progress; once it has
#                                           # ended, its results come back as $OUT/<mode>.tar.gz
#   scripts/gpu_h100.sh harvest             # out of device time: stop the scoring after the run, and
#                                           # return what was scored
# The machine goes back after 30 s idle: call await again at once. (Never `pkill -f` a word of your
# own command line: the pattern matches the call's own shell too.)
#
# Results go to $OUT/<mode>.tar.gz (one file: the device tool returns at most 8).
set -euo pipefail
MODE="${1:?usage: gpu_h100.sh curve|replay|default|fleet|background MODE|await [SECONDS]|harvest}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BG=/tmp/bg
case "$MODE" in
  background)
    rm -rf "$BG" && mkdir -p "$BG" && cp -a "$ROOT/." "$BG/checkout" && echo "${2:?background MODE}" > "$BG/mode"
    # env (MINUTES, SPI, SCORE_FROM_MIN, ...) goes with it; setsid: it outlives this call
    (cd "$BG/checkout" && OUT="$BG/out" setsid nohup scripts/gpu_h100.sh "$2" > "$BG/log" 2>&1 < /dev/null &)
    sleep 5; cat "$BG/log"; exit 0 ;;
  await|harvest)
    running() { pgrep -f "gpu_h100.sh $(cat "$BG/mode")" > /dev/null; }
    if [ "$MODE" = harvest ]; then  # out of time: stop the scoring after the run, keep what was scored
      pkill -INT -f "kept[-]since" || true; end=$(( $(date +%s) + 60 ))
    else end=$(( $(date +%s) + ${2:-570} )); fi
    while running && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
    tail -3 "$BG/log" | cut -c1-300
    for d in /tmp/lc_*; do
      f=$(ls -t "$d"/status_live/*.json 2>/dev/null | head -1)
      [ -z "$f" ] || python3 -c "
import json; s=json.load(open('$f')); t=s.get('trainer') or {}
print('$d', {k: t.get(k) for k in ('batches','compute_share','wait_limited_s','wait_filling_s','draws_per_insert')})"
    done
    { grep -h '"version_evaluated"' /tmp/lc_*/supervise.log /tmp/lc_*/evaluator-final.log 2>/dev/null || true; } | cut -c1-110 | tail -20
    if running; then echo "still running"; else
      echo "ended"; mkdir -p "${OUT:-/tmp/out}"; cp "$BG"/out/* "${OUT:-/tmp/out}/" 2>/dev/null || true; fi
    exit 0 ;;
esac
source scripts/gpu_env.sh
CORES="$(env -u OMP_NUM_THREADS nproc)"  # GNU nproc reports OMP_NUM_THREADS (1 below) as the cores
export OMP_NUM_THREADS=1
python3 -c 'import torch, pipeline.evaluate.closed_loop, rq, supervisor; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
RES="/tmp/results/$MODE"
# set_keys FILE "key=value;key=value": each key's line in FILE gets that value (curve's SETS, screen's VARIANTS)
set_keys() { local kv; for kv in ${2//;/ }; do sed -i "s/^${kv%%=*} = .*/${kv%%=*} = ${kv#*=}/" "$1"; done; }
mkdir -p "$RES"
case "$MODE" in
  curve)
    # env SPI overrides the config's samples_per_insert (16); env SETS ("key=value;key=value") other keys
    sed "s/^samples_per_insert = [0-9.]*/samples_per_insert = ${SPI:-16}.0/" configs/h100.toml > /tmp/h100.toml
    set_keys /tmp/h100.toml "${SETS:-}"
    CONFIG=/tmp/h100.toml MINUTES="${MINUTES:-7}" CONCURRENCY="collector=11,evaluator=2" COLLECTORS=11 \
      ROLES="redis server trainer collector evaluator" WORK=/tmp/lc_h100 PNG="$RES/learning_curve_h100.png" \
      LABEL="configs/h100.toml, samples_per_insert ${SPI:-16} ${SETS:-}, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) + $CORES cores, 11 collectors" \
      scripts/learning_curve_run.sh
    cp /tmp/lc_h100/{evaluation.json,summary.json,status.json,supervise.log,evaluator-final.log} "$RES/"
    cp -r /tmp/lc_h100/runs /tmp/lc_h100/status_live "$RES/" || true
    ;;
  replay)
    # side by side on one machine: configs/h100.toml with draw-and-delete (samples_per_insert 1)
    # and with samples_per_insert 8, each with 5 collectors and one 3-process evaluator, MINUTES each
    sed 's/^processes = [0-9]*/processes = 3/' configs/h100.toml > /tmp/h100_3.toml
    sed "s/^samples_per_insert = [0-9.]*/samples_per_insert = 1.0/" /tmp/h100_3.toml > /tmp/spi1.toml
    sed "s/^samples_per_insert = [0-9.]*/samples_per_insert = ${SPI:-8}.0/" /tmp/h100_3.toml > /tmp/spi8.toml
    if [ -n "${EMA:-}" ]; then sed -i "/^\[trainer\]/a ema_decay = $EMA" /tmp/spi8.toml; fi  # the second run averages too
    port=6501
    for v in spi1 spi8; do
      CONFIG=/tmp/$v.toml MINUTES="${MINUTES:-6}" CONCURRENCY="collector=5,evaluator=1" COLLECTORS=5 PORT=$port \
        ROLES="redis server trainer collector evaluator" WORK=/tmp/lc_$v PNG="$RES/learning_curve_h100_$v.png" \
        LABEL="h100.toml $v, H100 + 16 cores shared by 2 runs, 5 collectors" scripts/learning_curve_run.sh > "$RES/$v.out" 2>&1 &
      port=$((port + 1))
    done
    wait
    for v in spi1 spi8; do
      mkdir -p "$RES/$v" && cp /tmp/lc_$v/{evaluation.json,summary.json,status.json,supervise.log,evaluator-final.log} "$RES/$v/" || true
      cp -r /tmp/lc_$v/status_live "$RES/$v/" || true
    done
    ;;
  default)
    # NPC data, training, then DAGGER_ROUNDS rounds in which the model drives a 1-DAGGER_BETA share
    # of 3 s segments with NPC labels, aggregated and trained on. Each round costs ~1 min on top
    # (loading shards, scoring the last snapshot), so BUDGET_S cuts the last training to end in
    # time; `timeout` is the net (stopped, the last finished round's model is kept): both keep the
    # run inside the device tool's 10 minutes.
    BUDGET_S="${BUDGET_S:-545}"
    timeout -k 10 "$((BUDGET_S + 25))" python3 scripts/train_default.py all --budget-s "$BUDGET_S" \
      --data /tmp/offline --workers 14 \
      --collect-minutes "${COLLECT_MIN:-2}" --sample-every 3 --minutes "${TRAIN_MIN:-2}" --device cuda \
      --batch-size 256 --lr 0.002 --snapshot-every "${SNAPSHOT_EVERY:-1500}" --eval-workers 6 --eval-episodes 1 \
      --dagger-rounds "${DAGGER_ROUNDS:-1}" --dagger-minutes "${DAGGER_MIN:-1.5}" \
      --dagger-train-minutes "${DAGGER_TRAIN_MIN:-2.5}" --dagger-beta "${DAGGER_BETA:-0.5}" \
      --out "$RES/charles_small_cnn.safetensors" 2>&1 | grep -v '"debug"' | tee "$RES/train.log" \
      || echo "train_default.py stopped early (timeout or error): see train.log" | tee -a "$RES/train.log"
    if [ "${FINAL_EVAL:-0}" = 1 ]; then  # ~3 more minutes: 8 episodes each for the model, NPC, baseline
      python3 -m pipeline.cli evaluate --weights "$RES/charles_small_cnn.safetensors" --episodes 2 --json \
        > "$RES/evaluate_episodes2.json" || true
    fi
    rm -rf "$RES/charles_small_cnn.snapshots"
    ;;
  screen)
    # each variant: configs/default.toml with `key = value` lines replaced, on cores 2i and 2i+1, the
    # trainer on those cores too (CUDA hidden: the first screen, 2026-12-06, let all six train on the GPU)
    # VARIANTS: "name:key=value;key=value ..." (a value may hold commas: traffic_density=[0.4,1.0])
    VARIANTS="${VARIANTS:-default: cap10k:capacity=10000;start_fraction=0.1}"
    PER="${CORES_PER_SYSTEM:-2}"  # 4 on a host whose 16 CPUs are 8 cores with two threads each
    i=0; port=6510
    for v in $VARIANTS; do
      name="${v%%:*}"; sets="${v#*:}"; cp configs/default.toml "/tmp/$name.toml"
      set_keys "/tmp/$name.toml" "$sets"
      CONFIG=/tmp/$name.toml MINUTES="${MINUTES:-15}" SCORE_FROM_MIN="${SCORE_FROM_MIN:-9}" SCORE_PROCESSES=3 \
        SCORE_CPUS="0-$((CORES - 1))" PORT=$port WORK=/tmp/lc_$name REFS=/tmp/refs_$name \
        PNG="$RES/learning_curve_$name.png" LABEL="default.toml $name ($sets), $PER CPUs of the GPU host" \
        CUDA_VISIBLE_DEVICES="" taskset -c "$((PER * i))-$((PER * i + PER - 1))" scripts/learning_curve_run.sh \
        > "$RES/$name.out" 2>&1 &   # no GPU: a 2-core machine's trainer runs on its CPU
      i=$((i + 1)); port=$((port + 1))
    done
    wait
    for v in $VARIANTS; do
      name="${v%%:*}"; mkdir -p "$RES/$name"
      cp /tmp/lc_$name/{evaluation.json,summary.json,status.json,supervise.log,evaluator-final.log,config.toml} "$RES/$name/" || true
      cp -r /tmp/lc_$name/status_live "$RES/$name/" || true
    done
    ;;
  fleet)
    # routed samples/s at 1, 2 and 3 shards against the nodes' raw SET + XADD ceiling (pipeline/bench/fleet.py)
    command -v redis-cli >/dev/null || { echo "redis-cli missing: rebuild .gpu with scripts/gpu_pack.sh" >&2; exit 2; }
    echo "$CORES" > "$RES/nproc.txt"
    # configs/xception_270x480.toml: 270x480 frames, zstd (about 6 minutes for both at 15 s a round)
    for cfg in ${FLEET_CONFIGS:-default xception_270x480}; do
      python3 -m pipeline.cli bench fleet --json --config "configs/$cfg.toml" --seconds "${SECONDS_PER_ROUND:-15}" \
        --collectors "${COLLECTORS:-0}" --rate "${RATE:-0}" 2>"$RES/fleet_$cfg.err" | tee "$RES/fleet_$cfg.json"
    done
    ;;
  codecs)
    # the trainer bench on cuda per frame codec, two rounds alternating: the default config (160x120 small CNN)
    # and configs/xception_270x480.toml (env CODEC_SECONDS, 8)
    for round in 1 2; do
      for cfg in default xception_270x480; do
        for codec in raw zstd jpeg; do
          sed "s/^frame_codec = .*/frame_codec = \"$codec\"/" "configs/$cfg.toml" > "/tmp/${cfg}_$codec.toml"
          python3 -m pipeline.cli bench trainer --json --device cuda --seconds "${CODEC_SECONDS:-8}" \
            --config "/tmp/${cfg}_$codec.toml" 2>>"$RES/codecs.err" | sed "s/^/{\"config\": \"$cfg\", \"codec\": \"$codec\", \"round\": $round, \"bench\": /; s/\$/}/" \
            | tee -a "$RES/codecs.jsonl"
        done
      done
    done
    nvidia-smi --query-gpu=name --format=csv,noheader > "$RES/gpu.txt"; lscpu > "$RES/lscpu.txt"
    ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
mkdir -p "${OUT:-/tmp/out}"
tar -C /tmp/results -czf "${OUT:-/tmp/out}/$MODE.tar.gz" "$MODE"
ls -la "${OUT:-/tmp/out}"
