"""Evaluation: quality, speed and memory as numbers and plots.

- metrics.py   per-video metrics as pure functions (temporal consistency, motion, text alignment)
- fvd.py       Fréchet Video Distance with a user-supplied I3D TorchScript network (protocol in the name)
- runner.py    `evaluate()`: models x step counts x seeds -> generated, scored, summarised
- report.py    markdown table and score-vs-steps PNG from `evaluate()` results
- cli.py       `t2v-turbo eval`
- vbench.py    `t2v-turbo export-vbench`: `{prompt}-{index}.mp4` folders + metadata (+ vbench if installed)
- hardware.py  the machine label recorded with every number
"""
