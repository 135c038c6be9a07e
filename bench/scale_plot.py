#!/usr/bin/env python3
"""Draws bench/scale.sh's table as an SVG: wall time and peak memory against model size.

usage: scale_plot.py SCALE.tsv OUT.svg

Left: wall time of each command against parameters per model, with the time to read a
fuse's three inputs and write its output once at the disk's measured rates (dashed).
Right: peak resident memory. Plain SVG, no plotting library needed.
"""
import csv
import math
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
if not rows:
    sys.exit("error: %s: no rows" % sys.argv[1])
series = defaultdict(list)
bound = {}
for r in rows:
    size = int(r["params"]) / 1e9
    series[r["command"]].append((size, float(r["wall_s"]), float(r["peak_mb"])))
    if r["command"].startswith("fuse-"):
        bound[size] = float(r["bound_s"])
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
W, H, M = 430, 300, 55          # panel width, height, margin
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
       % (2 * W + 170, H + 40), '<rect width="100%" height="100%" fill="white"/>']


def nice_step(raw):
    """The smallest of 1, 2 or 5 times a power of ten that is at least `raw`."""
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def panel(x0, title, unit, value, extra=None):
    xs = [p[0] for s in series.values() for p in s]
    ys = [value(p) for s in series.values() for p in s] + ([y for _, y in extra] if extra else [])
    xmax = max(xs) * 1.08
    step = nice_step(max(ys) / 5)
    ymax = step * (int(max(ys) / step) + 1)

    def px(x):
        return x0 + M + (W - M - 10) * x / xmax

    def py(y):
        return H - 30 - (H - 60) * y / ymax
    out.append('<text x="%.0f" y="18" font-size="13" text-anchor="middle">%s</text>' % (x0 + W / 2, escape(title)))
    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>' % (px(0), py(0), px(xmax), py(0)))
    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>' % (px(0), py(0), px(0), py(ymax)))
    for i in range(int(round(ymax / step)) + 1):
        y = step * i
        out.append('<text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>' % (px(0) - 4, py(y) + 4, y))
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>' % (px(0), py(y), px(xmax), py(y)))
    for x in sorted({p[0] for s in series.values() for p in s}):
        out.append('<text x="%.1f" y="%.1f" text-anchor="middle">%.2g</text>' % (px(x), py(0) + 14, x))
    out.append('<text x="%.1f" y="%.1f" text-anchor="middle">parameters per model (billions)</text>' % (x0 + W / 2, H + 2))
    out.append('<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s</text>'
               % (x0 + 14, H / 2, x0 + 14, H / 2, escape(unit)))
    for (name, points), color in zip(sorted(series.items()), colors):
        pts = sorted(points)
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>'
                   % (color, " ".join("%.1f,%.1f" % (px(p[0]), py(value(p))) for p in pts)))
        for p in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px(p[0]), py(value(p)), color))
    if extra:
        out.append('<polyline fill="none" stroke="gray" stroke-dasharray="5,4" points="%s"/>'
                   % " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y in sorted(extra)))


panel(0, "wall time, cold page cache", "seconds", lambda p: p[1], sorted(bound.items()))
panel(W, "peak resident memory", "MB", lambda p: p[2])
for i, ((name, _), color) in enumerate(zip(sorted(series.items()), colors)):
    y = 50 + 18 * i
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (2 * W + 10, y, 2 * W + 30, y, color))
    out.append('<text x="%d" y="%d">%s</text>' % (2 * W + 35, y + 4, escape(name)))
y = 50 + 18 * len(series)
out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="gray" stroke-dasharray="5,4"/>' % (2 * W + 10, y, 2 * W + 30, y))
out.append('<text x="%d" y="%d">fuse: read 3, write 1</text>' % (2 * W + 35, y + 4))
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
