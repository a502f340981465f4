"""Fit the authors' 200 + 30 + 30 epoch CIFAR-10 schedule (or the same proportions, shortened) into a slot.

Usage: ``python plan.py SECONDS`` after call 1's probes have written /tmp/probe-*.txt (one per process that
ran at once). Prints ``EPOCHS FIRST_DROP SECOND_DROP MAX_MINUTES GRAPHS``: GRAPHS is true when every probe
captured its graph. Calibrated on the H200 session of 2026-11-27 (results/h200-2026-11-27.md): two eager runs
at once took 1.74 s per training epoch while the probe gave 23,899 images/s per process, plus about 0.2 s per
epoch for validation and records; data preparation (GCN + ZCA) and the test splits take about 75 s, more when
eight runs prepare at once (``PREPARE`` seconds, the second argument, default 75).
"""
import glob
import sys

seconds = float(sys.argv[1])
prepare = float(sys.argv[2]) if len(sys.argv) > 2 else 75.0
probes = [open(path).read().split() for path in sorted(glob.glob("/tmp/probe-*.txt"))]
slowest = min(float(speed) for speed, _ in probes)
graphs = all(flag == "1" for _, flag in probes)
epoch = 1.74 * 23899 / slowest + 0.2
train = seconds - prepare
epochs = min(260, int(train / epoch))
print(epochs, round(epochs * 200 / 260), round(epochs * 230 / 260), round(train / 60, 2), str(graphs).lower())
print(f"probe: {len(probes)} processes at once, the slowest {slowest:.0f} images/s, graphs {graphs}; "
      f"{epoch:.2f} s per epoch; {train:.0f} s -> {epochs} epochs", file=sys.stderr)
