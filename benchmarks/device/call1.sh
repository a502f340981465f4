# Device call 1: piece a of the data, then the training speed of JOBS processes at once (read by plan.py):
# 8 (the eight CIFAR-10 arms) on a machine with 16 or more cores, else 2 (cifar10 and cifar10-aug).
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "nproc $(nproc)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
mkdir -p ../shared /tmp/data && ln -sfn /tmp/data ../shared/data
python3 benchmarks/device/data.py unpack .devdata/a /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
export PYTHONPATH=$PWD/src
JOBS=$([ "$(nproc)" -ge 16 ] && echo 8 || echo 2)
rm -f /tmp/probe-*.txt
S=$(( $(date +%s) + 25 ))
for i in $(seq $JOBS); do timeout 60 python3 benchmarks/device/probe.py $S 6 > /tmp/probe-$i.txt 2> /tmp/probe-$i.err & done
wait
echo "probe, $JOBS processes at once (images/s, graphed): $(cat /tmp/probe-*.txt | tr '\n' ' ')"
cat /tmp/probe-*.err
echo "$JOBS" > /tmp/jobs.txt
echo "call 1 done at $(( $(date +%s) - T0 )) s"
