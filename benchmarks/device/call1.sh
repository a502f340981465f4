# Device call 1: piece a of the data, then the training speed of the arm that call 3 trains (read by plan.py):
# `cifar10-nodropout` (Figure 3) unless ARMS names others (say `ARMS=cifar10` for the GAP network at lr 0.05).
# Table 5's other NIN arms and the three Section 4.6 CNN arms have their full 260 epochs on the CPU.
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "nproc $(nproc)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
mkdir -p ../shared /tmp/data && ln -sfn /tmp/data ../shared/data
python3 benchmarks/device/data.py unpack .devdata/a /tmp/data || exit 3
echo "unpacked at $(( $(date +%s) - T0 )) s"
export PYTHONPATH=$PWD/src
GROUPS_=("${ARMS:-cifar10-nodropout}")
rm -rf /tmp/probe
S=$(( $(date +%s) + 30 ))
for g in "${!GROUPS_[@]}"; do
  mkdir -p /tmp/probe/$g
  for arm in ${GROUPS_[$g]}; do
    timeout 90 python3 benchmarks/device/probe.py $(( S + 8 * g )) 6 $arm > /tmp/probe/$g/$arm.txt 2> /tmp/probe/$g/$arm.err &
  done
done
wait
for g in "${!GROUPS_[@]}"; do
  echo "probe group $g (images/s, graphed): $(for f in /tmp/probe/$g/*.txt; do echo "$(basename $f .txt) $(cat $f);"; done)"
done
cat /tmp/probe/*/*.err
echo "call 1 done at $(( $(date +%s) - T0 )) s"
