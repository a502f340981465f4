# Device call 1: piece a of the data, then the training speed of two processes at once (read by plan.py).
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "nproc $(nproc)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
mkdir -p ../shared /tmp/data && ln -sfn /tmp/data ../shared/data
python3 benchmarks/device/data.py unpack .devdata/a /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
export PYTHONPATH=$PWD/src
S=$(( $(date +%s) + 12 ))
timeout 40 python3 benchmarks/device/probe.py $S 4 > /tmp/probe-pair1.txt & timeout 40 python3 benchmarks/device/probe.py $S 4 > /tmp/probe-pair2.txt; wait
echo "probe images/s per process, two at once: $(cat /tmp/probe-pair1.txt) + $(cat /tmp/probe-pair2.txt)"
echo "call 1 done at $(( $(date +%s) - T0 )) s"
