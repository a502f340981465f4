# Device call 2: piece b, then cifar10 and cifar10-aug at once on the authors' step schedule fitted to SECONDS.
T0=$(date +%s); CALL=$1
export PYTHONPATH=$PWD/src NIN_DATA=../shared/data PYTHONUNBUFFERED=1
[ -f /tmp/data/cifar-10-lossless-train-batches-py/data_batch_3 ] || { echo "piece a missing: a fresh machine"; exit 4; }
python3 benchmarks/device/data.py unpack .devdata/b /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
read E M1 M2 MAXMIN < <(python3 benchmarks/device/plan.py $(( CALL - ($(date +%s) - T0) )))
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]00' | head -1 | tr H h)
TAG=${GPU:-gpu}-step$E
echo "plan: $E epochs, rate /10 after epochs $M1 and $M2, max-minutes $MAXMIN, tag $TAG"
ARGS=(--tag $TAG --device cuda --precision bf16 --channels-last --epochs $E --set 'schedule="step"'
      --set "milestones=[$M1,$M2]" --save-every 20 --max-minutes $MAXMIN)
KILL=$(( CALL - ($(date +%s) - T0) - 15 ))
timeout $KILL python3 -m nin reproduce table1 --only cifar10 "${ARGS[@]}" > runs-cifar10.log 2>&1 &
timeout $KILL python3 -m nin reproduce table1 --only cifar10-aug "${ARGS[@]}" > runs-cifar10-aug.log 2>&1
wait
echo "runs done at $(( $(date +%s) - T0 )) s"
tail -n 4 runs-cifar10.log runs-cifar10-aug.log
tar czf $OUT/results.tgz results/*-$TAG runs/*-$TAG/metrics.jsonl runs/*-$TAG/recipe.toml runs-*.log
echo "call 2 done at $(( $(date +%s) - T0 )) s"
