# Device call 3 (after call 2 unpacked piece b): piece c, then the arms that plan.py chose from call 1's probes,
# at once, on the authors' step schedule fitted to SECONDS, CUDA-graphed where every probe of the group captured.
# Usage: [VARIANT=NAME] bash call3.sh SECONDS [nin reproduce options]: the options (say `--seed 1`) go to every arm,
# and VARIANT (say `seed1`) ends the records' tag, so that they do not stand under the plain recipe's name.
T0=$(date +%s); CALL=$1; shift
export PYTHONPATH=$PWD/src NIN_DATA=../shared/data PYTHONUNBUFFERED=1
for batch in 1 3; do  # one batch of each earlier piece
  [ -f /tmp/data/cifar-10-lossless-train-batches-py/data_batch_$batch ] || { echo "piece a or b missing: a fresh machine"; exit 4; }
done
python3 benchmarks/device/data.py unpack .devdata/c /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
read E M1 M2 MAXMIN GRAPHS ARMS < <(python3 benchmarks/device/plan.py $(( CALL - ($(date +%s) - T0) )))
ARMS=($ARMS)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]00' | head -1 | tr H h)
TAG=${GPU:-gpu}-step$E${VARIANT:+-$VARIANT}
for arm in "${ARMS[@]}"; do  # an earlier session's records of the same length are kept, not overwritten
  [ -e results/$arm-$TAG ] && { TAG=$TAG-$(date -u +%Y%m%d); break; }
done
echo "plan: ${ARMS[*]} at once, $E epochs, rate /10 after epochs $M1 and $M2, max-minutes $MAXMIN, graphs $GRAPHS, tag $TAG"
KILL=$(( CALL - ($(date +%s) - T0) - 15 ))
timeout $KILL python3 -m nin reproduce table1 table5 fig3 --only "${ARMS[@]}" --jobs ${#ARMS[@]} --tag $TAG --runs-dir runs \
  --device cuda --precision bf16 --channels-last --epochs $E --set 'schedule="step"' --set "milestones=[$M1,$M2]" \
  --set cuda_graphs=$GRAPHS --save-every 20 --max-minutes $MAXMIN "$@" > runs-all.log 2>&1
echo "runs done at $(( $(date +%s) - T0 )) s"
tail -n 12 runs-all.log
tar czf $OUT/results.tgz results/*-$TAG runs/*-$TAG/metrics.jsonl runs/*-$TAG/recipe.toml runs/*-$TAG.log runs-all.log
echo "call 3 done at $(( $(date +%s) - T0 )) s"
