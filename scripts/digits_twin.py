#!/usr/bin/env python3
"""Reference twins of presets/mlp_classifier.yml and presets/vit.yml on the same digits split.

Reads the arrays caramba prepared (data/digits/{features,labels}.npy) and the split a caramba run
recorded (<run dir>/split.json), so both sides train and test on exactly the same rows. Reports:

- scikit-learn's MLPClassifier (hidden layer 256, ReLU, Adam, max_iter 500, its defaults
  otherwise), trained on the train rows (as caramba: val only draws the curves);
- when PyTorch is importable: the same MLP as the preset (64→256→10, AdamW lr 3e-3,
  wd 1e-4, batch 64, 1500 steps, 20 warmup steps then cosine to 10 %), trained on the train rows.

    python3 scripts/digits_twin.py runs/mlp_classifier/quick/train/split.json [--seeds 1 2 3]
"""

import argparse
import json
import math
import sys
import time

import numpy as np


def load(split_path, features="data/digits/features.npy", labels="data/digits/labels.npy"):
    x = np.load(features).astype(np.float32) / 16.0
    y = np.load(labels).astype(np.int64)
    with open(split_path) as f:
        split = json.load(f)
    return x, y, split


def sklearn_mlp(x, y, split, seed):
    from sklearn.neural_network import MLPClassifier

    train = np.array(split["train"])
    test = np.array(split["test"])
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=500, random_state=seed)
    t0 = time.perf_counter()
    clf.fit(x[train], y[train])
    secs = time.perf_counter() - t0
    return float((clf.predict(x[test]) == y[test]).mean()), secs


def torch_mlp(x, y, split, seed, steps=1500, batch=64, lr=3e-3, warmup=20):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    train = np.array(split["train"])
    xt, yt = torch.tensor(x[train]), torch.tensor(y[train])
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(len(train)), 0
    t0 = time.perf_counter()
    for step in range(steps):
        if step < warmup:
            f = (step + 1) / warmup
        else:
            p = (step - warmup) / max(1, steps - warmup)
            f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
        for g in opt.param_groups:
            g["lr"] = lr * f
        idx = []
        while len(idx) < batch:
            if pos == len(order):
                order, pos = rng.permutation(len(train)), 0
            idx.append(order[pos])
            pos += 1
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    net.eval()
    test = np.array(split["test"])
    with torch.no_grad():
        pred = net(torch.tensor(x[test])).argmax(1).numpy()
    return float((pred == y[test]).mean()), secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split", help="split.json of a caramba run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    x, y, split = load(args.split)
    print(f"rows: train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}")
    out = {}
    runs = [sklearn_mlp(x, y, split, s) for s in args.seeds]
    out["sklearn_mlp"] = runs
    accs = [a for a, _ in runs]
    print(f"sklearn MLPClassifier(256): test accuracy {np.mean(accs):.4f} ± {np.std(accs):.4f} "
          f"(seeds {args.seeds}: {', '.join(f'{a:.4f}' for a in accs)}), fit {np.mean([s for _, s in runs]):.2f} s")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed here: no torch twin")
    else:
        runs = [torch_mlp(x, y, split, s) for s in args.seeds]
        out["torch_mlp"] = runs
        accs = [a for a, _ in runs]
        print(f"PyTorch MLP (preset recipe): test accuracy {np.mean(accs):.4f} ± {np.std(accs):.4f}, "
              f"train {np.mean([s for _, s in runs]):.2f} s")
    json.dump(out, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
