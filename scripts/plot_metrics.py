#!/usr/bin/env python3
"""Plot runs' metrics.jsonl files into one SVG (no dependencies): the train loss of each run as a
line, its eval losses as dots, and orchestrator decisions as ticks on the x axis.

    python3 scripts/plot_metrics.py OUT.svg "TITLE" LABEL=path/metrics.jsonl [LABEL=...]
"""
import json
import sys

W, H, L, R, T, B = 720, 400, 60, 170, 40, 45
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def read(path):
    train, evals, decisions = [], [], []
    for line in open(path):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "decision" in row:
            decisions.append((row["step"], row["decision"]["to"]))
        elif "val_loss" in row:
            evals.append((row["step"], row["val_loss"]))
        elif "loss" in row:
            train.append((row["step"], row["loss"]))
    return train, evals, decisions


def main():
    out, title, runs = sys.argv[1], sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
    data = [(label, *read(path)) for label, path in runs]
    xs = [s for _, tr, ev, _ in data for s, _ in tr + ev]
    ys = [v for _, tr, ev, _ in data for _, v in tr + ev]
    x0, x1 = 0, max(xs)
    y0, y1 = min(ys) * 0.97, max(ys) * 1.02
    px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
    py = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">step</text>',
           f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" text-anchor="middle">loss (nats)</text>']
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        svg.append(f'<text x="{L - 6}" y="{py(y) + 4}" text-anchor="end">{y:.2f}</text>')
        svg.append(f'<line x1="{L}" y1="{py(y)}" x2="{W - R}" y2="{py(y)}" stroke="#eee"/>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        svg.append(f'<text x="{px(x)}" y="{H - B + 16}" text-anchor="middle">{x:.0f}</text>')
    for k, (label, train, evals, decisions) in enumerate(data):
        c = COLORS[k % len(COLORS)]
        pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in train)
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.2" opacity="0.8"/>')
        for s, v in evals:
            svg.append(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3.5" fill="{c}" stroke="black" stroke-width="0.5"/>')
        for s, to in decisions:
            svg.append(f'<line x1="{px(s):.1f}" y1="{H - B}" x2="{px(s):.1f}" y2="{H - B - 12}" stroke="{c}" stroke-width="2"/>')
            svg.append(f'<text x="{px(s):.1f}" y="{H - B - 15 - 12 * k}" text-anchor="middle" fill="{c}" font-size="10">→ {to}</text>')
        ly = T + 20 * k + 10
        svg.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 32}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        svg.append(f'<text x="{W - R + 38}" y="{ly + 4}">{label}</text>')
    svg.append(f'<text x="{W - R + 12}" y="{T + 20 * len(data) + 14}" font-size="10">line: train, dots: eval</text>')
    svg.append("</svg>")
    open(out, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
