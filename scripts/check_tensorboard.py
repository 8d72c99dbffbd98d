#!/usr/bin/env python3
"""Check a caramba run's TensorBoard event files with the real `tensorboard` package.

    pip install tensorboard
    python3 scripts/check_tensorboard.py runs/<name>/<target>/<run>

For every `<run>/tb/<run_id>/` directory it
  1. reads each events file record by record (`LegacyEventFileLoader`: TensorBoard's own
     TFRecord reader, which checks both CRCs of every record, and its `Event` proto parser);
     the first record must carry `file_version: "brain.Event:2"`;
  2. loads the directory as TensorBoard's UI does (`EventAccumulator`);
  3. compares the `train/loss` scalars (and `eval/val_loss`, when metrics.jsonl has eval lines)
     of both with `<run>/metrics.jsonl`: the same steps, each once, and each value equal to the
     metrics value rounded to f32 (TensorBoard stores `simple_value` as a float).

Exit status 0 when everything matches, 1 on any mismatch (each one printed), 2 on bad usage or a
missing directory. CI does not run this (CI has no Python); tests/instrument.rs runs it when
`python3 -c "import tensorboard"` works.
"""

import argparse
import glob
import json
import os
import struct
import sys


def f32(x):
    """`x` rounded to the nearest float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def metrics_by_tag(path):
    """{tag: {step: value}} of metrics.jsonl under the tags caramba writes to TensorBoard."""
    out = {"train/loss": {}, "eval/val_loss": {}}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if "loss" in row:
                out["train/loss"][row["step"]] = row["loss"]
            elif "val_loss" in row:
                out["eval/val_loss"][row["step"]] = row["val_loss"]
    return {tag: steps for tag, steps in out.items() if steps}


def raw_scalars(tb_dir, problems):
    """{tag: [(step, value)]} from every events file of `tb_dir`, read record by record."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = {}
    files = sorted(glob.glob(os.path.join(tb_dir, "*tfevents*")))
    if not files:
        problems.append(f"{tb_dir}: no events files")
    for path in files:
        events = list(LegacyEventFileLoader(path).Load())
        if not events or events[0].file_version != "brain.Event:2":
            problems.append(f"{path}: the first record is not file_version brain.Event:2")
        for event in events[1:]:
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def accumulated_scalars(tb_dir):
    """{tag: [(step, value)]} as TensorBoard's UI loads the directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def compare(where, tag, got, want, problems):
    """Every (step, value) of `got` against metrics.jsonl's `want` {step: value}."""
    seen = {}
    for step, value in got:
        if step in seen:
            problems.append(f"{where}: {tag} step {step} appears twice")
        seen[step] = value
    for step, expected in sorted(want.items()):
        if step not in seen:
            problems.append(f"{where}: {tag} step {step} is in metrics.jsonl but not in TensorBoard")
            continue
        # why: NaN (a diverged run) must match NaN; else the f32 rounding of the logged f64.
        exp32 = f32(expected)
        value = seen[step]
        if not (value == exp32 or (value != value and exp32 != exp32)):
            problems.append(
                f"{where}: {tag} step {step}: TensorBoard {value!r}, metrics.jsonl {expected!r} (f32 {exp32!r})"
            )
    for step in sorted(set(seen) - set(want)):
        problems.append(f"{where}: {tag} step {step} is in TensorBoard but not in metrics.jsonl")
    return len(seen)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory (holding metrics.jsonl and tb/)")
    args = parser.parse_args()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("error: the `tensorboard` package is missing; pip install tensorboard", file=sys.stderr)
        return 2
    metrics_path = os.path.join(args.run_dir, "metrics.jsonl")
    tb_root = os.path.join(args.run_dir, "tb")
    if not os.path.isfile(metrics_path) or not os.path.isdir(tb_root):
        print(f"error: {args.run_dir} has no metrics.jsonl or no tb/ directory", file=sys.stderr)
        return 2
    want = metrics_by_tag(metrics_path)
    tb_dirs = sorted(d for d in glob.glob(os.path.join(tb_root, "*")) if os.path.isdir(d))
    if not tb_dirs:
        print(f"error: {tb_root} holds no run directory", file=sys.stderr)
        return 2
    problems = []
    for tb_dir in tb_dirs:
        raw = raw_scalars(tb_dir, problems)
        shown = accumulated_scalars(tb_dir)
        for tag, steps in sorted(want.items()):
            n_raw = compare(f"{tb_dir} (files)", tag, raw.get(tag, []), steps, problems)
            n_shown = compare(f"{tb_dir} (EventAccumulator)", tag, shown.get(tag, []), steps, problems)
            print(f"{tb_dir}: {tag}: {n_raw} scalars in the files, {n_shown} loaded, {len(steps)} in metrics.jsonl")
        print(f"{tb_dir}: tags {', '.join(sorted(shown))}")
    for p in problems:
        print(f"mismatch: {p}", file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("ok: TensorBoard agrees with metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
