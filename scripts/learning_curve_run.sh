#!/usr/bin/env bash
# Learning curve from nothing: `charles supervise` (as `make run`) with the project's Procfile in a scratch folder
# (own Redis port, empty runs/ and checkpoints/), for MINUTES minutes; then the evaluator
# scores the last version published, and the evaluation results are exported and plotted.
#
#   scripts/learning_curve_run.sh                        # (a) default config, this machine's CPUs
#   CONFIG=configs/h100.toml COLLECTORS=14 MINUTES=8 LABEL="H100" scripts/learning_curve_run.sh   # (b)
#
# Every published version stays in Redis (KEEP_VERSIONS, default 400, overrides trainer.keep_versions in a copy of the
# config), so that SCORE_FROM_MIN (default: the last third of the run) can have every version published from that
# minute on scored after the run (`charles evaluator --burst --since`, on all cores, SCORE_PROCESSES).
#
# Env: CONFIG, MINUTES (30), COLLECTORS (2), CONCURRENCY (charles supervise -c, default collector=$COLLECTORS),
# SCORE_EPISODES (episodes per environment for the scoring after the run; default: the config's),
# SCORE_CPUS (the cores the scoring after the run may use, e.g. 0-15, when the run itself was pinned to fewer), PORT (6496), WORK (var/lc_<name>), REFS (var/evaluation: reference scores kept between curves), LABEL, PNG, PYTHON, ROLES (the Procfile roles to start; the
# dashboard and TensorBoard are left out by default: nobody watches them and their ports may be taken).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CONFIG="$(realpath "${CONFIG:-$ROOT/configs/default.toml}")"
NAME="$(basename "$CONFIG" .toml)"
MINUTES="${MINUTES:-30}"
COLLECTORS="${COLLECTORS:-2}"
PORT="${PORT:-6496}"
WORK="${WORK:-$ROOT/var/lc_$NAME}"
# GNU nproc counts OMP_NUM_THREADS as the cores (gpu_h100.sh sets it to 1): count the CPUs this may run on
CORES="$(env -u OMP_NUM_THREADS nproc)"
LABEL="${LABEL:-$NAME, $CORES CPUs, $COLLECTORS collectors}"
PNG="${PNG:-$ROOT/docs/img/learning_curve_$NAME.png}"
ROLES="${ROLES:-redis server trainer collector player evaluator}"
CONCURRENCY="${CONCURRENCY:-collector=$COLLECTORS}"
PYTHON="${PYTHON:-python}"
REFS="${REFS:-$ROOT/var/evaluation}"
[ -d "$ROOT/.venv/bin" ] && export PATH="$ROOT/.venv/bin:$PATH"

KEEP_VERSIONS="${KEEP_VERSIONS:-400}"
SCORE_FROM_MIN="${SCORE_FROM_MIN:-$((MINUTES * 2 / 3))}"
SCORE_PROCESSES="${SCORE_PROCESSES:-$CORES}"

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
sed "s/^keep_versions = [0-9]*/keep_versions = $KEEP_VERSIONS/" "$CONFIG" > config.toml
grep -q "^keep_versions = $KEEP_VERSIONS" config.toml || sed -i "/^\[trainer\]/a keep_versions = $KEEP_VERSIONS" config.toml
CONFIG="$WORK/config.toml"
# the NPC's and the baseline's reference scores are not training state: keep them between curves
mkdir -p "$REFS" var && ln -s "$REFS" var/evaluation
cp "$ROOT/Procfile" Procfile
grep -q '^evaluator:' Procfile || echo 'evaluator: charles evaluator' >> Procfile
cat > .env <<EOF
CHARLES_REDIS_HOST=127.0.0.1
CHARLES_REDIS_PORT=$PORT
CHARLES_REDIS_PASSWORD=$($PYTHON -c 'import secrets; print(secrets.token_hex(16))')
CHARLES_KEY_PREFIX=charles:
CHARLES_CONFIG=$CONFIG
CHARLES_LOG_JSON=1
EOF
chmod 600 .env
set -a; . ./.env; set +a

date +%s > t0
echo "learning curve: $LABEL for $MINUTES min in $WORK"
# what the roles report while they run (the trainer's compute share, data age, waits), once a minute
mkdir -p status_live
( while sleep 60; do charles status --json > "status_live/$(date +%s).json" 2>/dev/null || true; done ) &
SAMPLER=$!
# shellcheck disable=SC2086
timeout -s INT -k 90 "$((MINUTES * 60))" charles supervise -c "$CONCURRENCY" $ROLES > supervise.log 2>&1 || true
kill "$SAMPLER" 2>/dev/null || true

# the live evaluator keeps up with only some versions: score every version published from minute
# SCORE_FROM_MIN on (the newest included) now, on every core
charles redis > redis.log 2>&1 &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do charles status --json > /dev/null 2>&1 && break; sleep 0.2; done
# SCORE_EPISODES (per environment): more than the live evaluator's, for tighter intervals; the versions it
# scored are then scored again on the larger plan
${SCORE_CPUS:+taskset -c "$SCORE_CPUS"} charles evaluator --nice 0 --processes "$SCORE_PROCESSES" \
  ${SCORE_EPISODES:+--episodes "$SCORE_EPISODES"} --kept-since "$(( $(cat t0) + SCORE_FROM_MIN * 60 ))" \
  > evaluator-final.log 2>&1 || true
$PYTHON "$ROOT/scripts/learning_curve.py" export --out "$WORK/evaluation.json" --t0 "$(cat t0)" --label "$LABEL"
$PYTHON "$ROOT/scripts/learning_curve.py" plot "$WORK/evaluation.json" --out "$PNG" \
  --title "Charles from nothing: $LABEL" --deadline-min "$MINUTES" | tee summary.json
charles status --json > status.json
