"""Fit the authors' 200 + 30 + 30 epoch CIFAR-10 schedule (or the same proportions, shortened) into a slot.

Usage: ``python plan.py SECONDS`` after ``probe.py`` has written /tmp/probe-pair{1,2}.txt. Prints
``EPOCHS FIRST_DROP SECOND_DROP MAX_MINUTES``. Calibrated on the H200 session of 2026-11-27
(results/h200-2026-11-27.md): two runs at once took 1.74 s per training epoch while the probe gave
23,899 images/s per process, plus about 0.2 s per epoch for validation and records and about a minute
for data preparation and the test splits. (That probe timed its own copy of the step; it now times
``train_step``, the same forward, loss and update.)
"""
import sys

seconds = float(sys.argv[1])
pair = min(float(open(f"/tmp/probe-pair{i}.txt").read()) for i in (1, 2))
epoch = 1.74 * 23899 / pair + 0.2
train = seconds - 75
epochs = min(260, int(train / epoch))
print(epochs, round(epochs * 200 / 260), round(epochs * 230 / 260), round(train / 60, 2))
print(f"probe: {pair:.0f} images/s per process; {epoch:.2f} s per epoch; {train:.0f} s -> {epochs} epochs",
      file=sys.stderr)
