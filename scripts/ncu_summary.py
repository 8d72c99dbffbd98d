#!/usr/bin/env python3
"""GPU time per kernel name from `ncu --csv --metrics gpu__time_duration.sum` output, largest first."""
import csv
import sys
from collections import defaultdict

rows = [line for line in open(sys.argv[1], errors="replace") if line.startswith('"')]
total, count = defaultdict(float), defaultdict(int)
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0][:90]
    total[name] += float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], 1.0)
    count[name] += 1
grand = sum(total.values())
print(f"{sum(count.values())} kernels, {grand / 1e3:.1f} ms of GPU time")
for name, us in sorted(total.items(), key=lambda kv: -kv[1])[: int(sys.argv[2]) if len(sys.argv) > 2 else 30]:
    print(f"{us / 1e3:9.2f} ms {100 * us / grand:5.1f}% {count[name]:7d}x  {name}")
