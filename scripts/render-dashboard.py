#!/usr/bin/env python3
"""Draws the panels of docs/grafana-dashboard.json from a live Prometheus, without Grafana.

For every panel it runs the panel's own PromQL (each target's `expr`) through Prometheus's HTTP
API (`/api/v1/query_range`) over the last WINDOW seconds, draws the series as SVG line charts
laid out on the dashboard's grid, writes one HTML page, and (with --png) has headless
Chromium screenshot it.

usage: render-dashboard.py [--prometheus URL] [--window SECONDS] [--out PAGE.html] [--png FILE]
"""

import argparse
import html
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9",
          "#705da0", "#508642", "#cca300", "#447ebc", "#c15c17"]
CELL_W, CELL_H = 50, 40  # pixels per grid column and per grid row unit


def query_range(prometheus, expr, start, end, step):
    args = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{args}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(fmt, labels):
    text = fmt
    for k, v in labels.items():
        text = text.replace("{{" + k + "}}", v)
    return text if "{{" not in text else text.split("{{")[0].strip() or json.dumps(labels)


def scaled(v, unit):
    if unit == "s":
        return f"{v * 1000:.3g} ms"
    if unit == "bytes":
        for suffix in ["B", "KiB", "MiB", "GiB"]:
            if abs(v) < 1024:
                return f"{v:.3g} {suffix}"
            v /= 1024
        return f"{v:.3g} TiB"
    if unit == "ops":
        return f"{v:.4g}/s"
    return f"{v:.4g}"


def chart(panel, series, width, height, start, end):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
    left, right, top, bottom = 70, 10, 30, 20 + 16 * ((len(series) + 1) // 2)
    plot_w, plot_h = width - left - right, max(40, height - top - bottom)
    values = [v for _, points in series for _, v in points if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo = min(lo, 0.0)
    if hi <= lo:
        hi = lo + 1.0
    x = lambda t: left + (t - start) / (end - start) * plot_w
    y = lambda v: top + plot_h - (v - lo) / (hi - lo) * plot_h
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect width="{width}" height="{height}" fill="#181b1f" stroke="#2c3235"/>',
           f'<text x="8" y="19" fill="#d8d9da" font-size="13" font-weight="600">'
           f'{html.escape(panel["title"])}</text>']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#2c3235"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" fill="#8e8e8e" font-size="10" '
                   f'text-anchor="end">{html.escape(scaled(v, unit))}</text>')
    for n, (name, points) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points if math.isfinite(v))
        if path:
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="1.5"/>')
        lx = left + (n % 2) * plot_w / 2
        ly = top + plot_h + 18 + 16 * (n // 2)
        out.append(f'<rect x="{lx:.0f}" y="{ly - 8}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{lx + 14:.0f}" y="{ly - 3}" fill="#d8d9da" font-size="11">'
                   f'{html.escape(name[:60])}</text>')
    if not series:
        out.append(f'<text x="{width / 2}" y="{height / 2}" fill="#8e8e8e" font-size="12" '
                   f'text-anchor="middle">no data</text>')
    out.append("</svg>")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default=os.path.join(ROOT, "docs", "grafana-dashboard.json"))
    ap.add_argument("--window", type=float, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--png", default=None)
    a = ap.parse_args()
    dashboard = json.load(open(a.dashboard))
    end = time.time()
    start = end - a.window
    step = max(1.0, a.window / 240)
    cells = []
    for panel in dashboard["panels"]:
        series = []
        for target in panel["targets"]:
            for result in query_range(a.prometheus, target["expr"], start, end, step):
                points = [(float(t), float(v)) for t, v in result["values"]]
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
        g = panel["gridPos"]
        cells.append((g, chart(panel, series, g["w"] * CELL_W - 6, g["h"] * CELL_H - 6,
                               start, end)))
    width = 24 * CELL_W
    height = max(g["y"] + g["h"] for g, _ in cells) * CELL_H + 40
    body = "".join(
        f'<div style="position:absolute;left:{g["x"] * CELL_W + 3}px;'
        f'top:{g["y"] * CELL_H + 40}px">{svg}</div>' for g, svg in cells)
    title = html.escape(dashboard["title"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body style="margin:0;background:#111217;font-family:sans-serif;'
            f'width:{width}px;height:{height}px;position:relative">'
            f'<div style="color:#d8d9da;padding:10px 8px;font-size:15px">{title}: the panels '
            f'of docs/grafana-dashboard.json drawn from Prometheus by '
            f'scripts/render-dashboard.py (not Grafana), last {a.window:.0f} s to {when}</div>'
            f'{body}</body></html>')
    out = a.out or os.path.join(tempfile.mkdtemp(), "dashboard.html")
    with open(out, "w") as f:
        f.write(page)
    print(f"page: {out}")
    if a.png:
        profile = tempfile.mkdtemp()
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--no-first-run",
                        f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={a.png}",
                        f"file://{out}"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print(f"png: {a.png}")


if __name__ == "__main__":
    sys.exit(main())
