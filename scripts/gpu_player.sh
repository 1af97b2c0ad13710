#!/bin/bash
# The player loop on the GPU machine, three ways side by side in one run (device tool, carry
# [".gpu"]): serial, overlapped in a thread, overlapped with the game in its own process.
# Writes $OUT/player_xception_{serial,thread,process}.json.
source scripts/gpu_env.sh || { echo "gpu_env failed"; exit 1; }
nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)"
C=configs/xception_270x480.toml
sed -e 's/^overlap = true/overlap = false/' -e 's/^game_process = true/game_process = false/' $C > /tmp/serial.toml
sed -e 's/^game_process = true/game_process = false/' $C > /tmp/thread.toml
for round in 1 2; do
  for v in serial thread process; do
    cfg=/tmp/$v.toml; [ $v = process ] && cfg=$C
    python3 -m pipeline.cli bench player --json --config $cfg --seconds ${SECONDS_EACH:-15} --device cuda \
      2>/dev/null | tail -1 | tee -a $OUT/player_xception_$v.json
  done
done
