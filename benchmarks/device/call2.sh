# Device call 2: piece b, then the CIFAR-10 arms at once (all eight with 16 or more cores, else cifar10 and
# cifar10-aug) on the authors' step schedule fitted to SECONDS, CUDA-graphed where call 1's probes captured.
T0=$(date +%s); CALL=$1
export PYTHONPATH=$PWD/src NIN_DATA=../shared/data PYTHONUNBUFFERED=1
[ -f /tmp/data/cifar-10-lossless-train-batches-py/data_batch_3 ] || { echo "piece a missing: a fresh machine"; exit 4; }
python3 benchmarks/device/data.py unpack .devdata/b /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
JOBS=$(cat /tmp/jobs.txt)
if [ "$JOBS" -ge 8 ]; then
  ARMS=(cifar10 cifar10-aug cifar10-fc cifar10-fc-dropout cifar10-nodropout cnn-fc cnn-fc-dropout cnn-gap); PREP=150
else
  ARMS=(cifar10 cifar10-aug); PREP=75
fi
read E M1 M2 MAXMIN GRAPHS < <(python3 benchmarks/device/plan.py $(( CALL - ($(date +%s) - T0) )) $PREP)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]00' | head -1 | tr H h)
TAG=${GPU:-gpu}-step$E
echo "plan: ${ARMS[*]}, $JOBS at once, $E epochs, rate /10 after epochs $M1 and $M2, max-minutes $MAXMIN, graphs $GRAPHS, tag $TAG"
KILL=$(( CALL - ($(date +%s) - T0) - 15 ))
timeout $KILL python3 -m nin reproduce table1 table5 fig3 --only "${ARMS[@]}" --jobs $JOBS --tag $TAG --runs-dir runs \
  --device cuda --precision bf16 --channels-last --epochs $E --set 'schedule="step"' --set "milestones=[$M1,$M2]" \
  --set cuda_graphs=$GRAPHS --save-every 20 --max-minutes $MAXMIN > runs-all.log 2>&1
echo "runs done at $(( $(date +%s) - T0 )) s"
tail -n 12 runs-all.log
tar czf $OUT/results.tgz results/*-$TAG runs/*-$TAG/metrics.jsonl runs/*-$TAG/recipe.toml runs/*-$TAG.log runs-all.log
echo "call 2 done at $(( $(date +%s) - T0 )) s"
