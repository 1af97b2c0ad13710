#!/usr/bin/env bash
# Learning curve from nothing: `charles supervise` (as `make run`) with the project's Procfile in a scratch folder
# (own Redis port, empty runs/ and checkpoints/), for MINUTES minutes; then the evaluator
# scores the last version published, and the evaluation results are exported and plotted.
#
#   scripts/learning_curve_run.sh                        # (a) default config, this machine's CPUs
#   CONFIG=configs/h100.toml COLLECTORS=14 MINUTES=8 LABEL="H100" scripts/learning_curve_run.sh   # (b)
#
# Env: CONFIG, MINUTES (30), COLLECTORS (2), CONCURRENCY (charles supervise -c, default collector=$COLLECTORS),
# PORT (6496), WORK (var/lc_<name>), REFS (var/evaluation: reference scores kept between curves), LABEL, PNG, PYTHON, ROLES (the Procfile roles to start; the
# dashboard and TensorBoard are left out by default: nobody watches them and their ports may be taken).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CONFIG="$(realpath "${CONFIG:-$ROOT/configs/default.toml}")"
NAME="$(basename "$CONFIG" .toml)"
MINUTES="${MINUTES:-30}"
COLLECTORS="${COLLECTORS:-2}"
PORT="${PORT:-6496}"
WORK="${WORK:-$ROOT/var/lc_$NAME}"
LABEL="${LABEL:-$NAME, $(nproc) CPUs, $COLLECTORS collectors}"
PNG="${PNG:-$ROOT/docs/img/learning_curve_$NAME.png}"
ROLES="${ROLES:-redis server trainer collector player evaluator}"
CONCURRENCY="${CONCURRENCY:-collector=$COLLECTORS}"
PYTHON="${PYTHON:-python}"
REFS="${REFS:-$ROOT/var/evaluation}"
[ -d "$ROOT/.venv/bin" ] && export PATH="$ROOT/.venv/bin:$PATH"

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
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

# the last versions were published while the evaluator was busy: score the newest one now
charles redis > redis.log 2>&1 &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do charles status --json > /dev/null 2>&1 && break; sleep 0.2; done
charles evaluator --burst --nice 0 > evaluator-final.log 2>&1 || true
$PYTHON "$ROOT/scripts/learning_curve.py" export --out "$WORK/evaluation.json" --t0 "$(cat t0)" --label "$LABEL"
$PYTHON "$ROOT/scripts/learning_curve.py" plot "$WORK/evaluation.json" --out "$PNG" \
  --title "Charles from nothing: $LABEL" --deadline-min "$MINUTES" | tee summary.json
charles status --json > status.json
