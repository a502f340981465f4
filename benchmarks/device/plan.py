"""Choose the arms for call 3 and fit the authors' 200 + 30 + 30 epoch schedule (or the same proportions,
shortened) into its slot.

Usage: ``python plan.py SECONDS`` after call 1's probes have written ``/tmp/probe/GROUP/ARM.txt``: one folder per
group of arms that would train at once, numbered in order of preference, each probed in a window of its own.
Prints ``EPOCHS FIRST_DROP SECOND_DROP MAX_MINUTES GRAPHS ARM...`` for the first group that fits at least
``MIN_EPOCHS`` (else the last, smallest group, on as many epochs as fit): GRAPHS is true when every probe of the
group captured its graph.
Calibrated on the H200 session of 2026-11-27 (results/h200-2026-11-27.md): two eager runs at once took 1.74 s per
training epoch while the probe gave 23,899 images/s per process, plus about 0.2 s per epoch for validation and
records; data preparation (GCN + ZCA) and the test splits took about 75 s for two runs at once, and about 15 s
more for each further run. The schedule is fitted into 90% of the time left, so that a slower epoch than
probed still ends before ``--max-minutes``.
"""
import sys
from pathlib import Path

MIN_EPOCHS = 260  # the whole schedule: a larger group only if it costs the arms of the smallest no epoch
PROBES = Path("/tmp/probe")

seconds = float(sys.argv[1])
groups = sorted((folder for folder in PROBES.iterdir() if folder.is_dir()), key=lambda folder: int(folder.name))
for group in groups:
    probes = {path.stem: path.read_text().split() for path in sorted(group.glob("*.txt"))}
    slowest = min(float(speed) for speed, _ in probes.values())
    graphs = all(flag == "1" for _, flag in probes.values())
    prepare = 45 + 15 * len(probes)
    epoch = (1.74 + 0.2) * 23899 / slowest
    epochs = min(260, int(0.9 * (seconds - prepare) / epoch))
    print(f"probe group {group.name}: {len(probes)} at once ({' '.join(probes)}), the slowest {slowest:.0f} "
          f"images/s, graphs {graphs}; {epoch:.2f} s per epoch; {seconds:.0f} s, {prepare} s to prepare "
          f"-> {epochs} epochs", file=sys.stderr)
    if epochs >= MIN_EPOCHS:
        break
max_minutes = round((seconds - prepare - 30) / 60, 2)  # 30 s left for the test splits and the records
print(epochs, round(epochs * 200 / 260), round(epochs * 230 / 260), max_minutes, str(graphs).lower(), *probes)
