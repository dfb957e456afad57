#!/usr/bin/env python3
"""Draws scripts/bench-vs-etcd.sh's results as an SVG (no dependencies): allocations/s, and
p50 / p99 latency, against clients, for raftipam and etcd. Input: the CSV the script writes
(clients,system,ops_per_sec,p50_us,p99_us,cpu_us_per_op; several rounds allowed: the median
of each point is drawn). Usage: plot-vs-etcd.py RESULTS.csv OUT.svg "caption"."""
import csv, math, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1])))
out, caption = sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
systems = {"raftipam": "#2563eb", "etcd": "#d97706"}
clients = sorted({int(r["clients"]) for r in rows})

def med(system, c, field):
    v = [float(r[field]) for r in rows if r["system"] == system and int(r["clients"]) == c]
    return statistics.median(v) if v else None

W, H, M = 860, 380, 60
panel_w = (W - 3 * M) / 2

def panel(x0, title, series, ylabel, log_y):
    vals = [v for _, _, pts in series for _, v in pts if v]
    lo, hi = (min(vals), max(vals)) if vals else (1, 10)
    if log_y:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    else:
        lo, hi = 0, hi * 1.15
    def y(v):
        if log_y:
            return M + (H - 2 * M) * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
        return M + (H - 2 * M) * (1 - (v - lo) / (hi - lo))
    lx = [math.log2(c) for c in clients]
    def x(c):
        span = (max(lx) - min(lx)) or 1
        return x0 + panel_w * (math.log2(c) - min(lx)) / span
    s = [f'<text x="{x0 + panel_w / 2}" y="{M - 25}" text-anchor="middle" font-weight="600">{title}</text>',
         f'<line x1="{x0}" y1="{H - M}" x2="{x0 + panel_w}" y2="{H - M}" stroke="#999"/>',
         f'<line x1="{x0}" y1="{M}" x2="{x0}" y2="{H - M}" stroke="#999"/>',
         f'<text x="{x0 - 45}" y="{M - 8}" font-size="11" fill="#555">{ylabel}</text>']
    ticks = [lo * 10 ** k for k in range(int(math.log10(hi / lo)) + 1)] if log_y else [lo + (hi - lo) * k / 4 for k in range(5)]
    for t in ticks:
        s.append(f'<text x="{x0 - 6}" y="{y(t) + 4}" text-anchor="end" font-size="11">{t:,.0f}</text>' if t >= 1 else f'<text x="{x0 - 6}" y="{y(t) + 4}" text-anchor="end" font-size="11">{t:g}</text>')
        s.append(f'<line x1="{x0}" y1="{y(t)}" x2="{x0 + panel_w}" y2="{y(t)}" stroke="#eee"/>')
    for c in clients:
        s.append(f'<text x="{x(c)}" y="{H - M + 16}" text-anchor="middle" font-size="11">{c}</text>')
    s.append(f'<text x="{x0 + panel_w / 2}" y="{H - M + 34}" text-anchor="middle" font-size="11" fill="#555">clients</text>')
    for name, (color, dash), pts in series:
        pts = [(c, v) for c, v in pts if v]
        d = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in pts)
        s.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/>')
        for c, v in pts:
            s.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}"/>')
    return s

svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 40}" font-family="system-ui, sans-serif" font-size="13">',
       f'<rect width="{W}" height="{H + 40}" fill="white"/>']
thr = [(n, (col, ""), [(c, med(n, c, "ops_per_sec")) for c in clients]) for n, col in systems.items()]
lat = []
for n, col in systems.items():
    lat.append((f"{n} p50", (col, ""), [(c, med(n, c, "p50_us") / 1000) for c in clients]))
    lat.append((f"{n} p99", (col, "5,4"), [(c, med(n, c, "p99_us") / 1000) for c in clients]))
svg += panel(M, "allocations per second (higher is better)", thr, "ops/s", True)
svg += panel(2 * M + panel_w, "latency, ms (lower is better): p50 solid, p99 dashed", lat, "ms", True)
lx = M
for n, col in systems.items():
    svg.append(f'<rect x="{lx}" y="{H + 5}" width="14" height="4" fill="{col}"/><text x="{lx + 20}" y="{H + 11}">{n}</text>')
    lx += 110
svg.append(f'<text x="{lx + 10}" y="{H + 11}" font-size="11" fill="#555">{caption}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg))
