"""A sweep's summary over seeds, rebuilt from the records alone: ``summary.csv`` (one
row per config: mean, standard deviation and 95 % interval over seeds, of the training
and validation losses), the same as text (``summary_table``), and ``summary.png``
(learning curves, mean and a band per config)."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from .grid import RECORDS, SweepError, canonical, group_id, load_records

METRICS = ("train_loss", "valid_loss")


def _interval(vals):
    """mean, sd, and the 95 % interval of the mean (Student t) of finite values."""
    from scipy import stats
    v = np.asarray([x for x in vals if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return dict(mean=np.nan, sd=np.nan, lo=np.nan, hi=np.nan, median=np.nan,
                    min=np.nan, max=np.nan, n=0)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else np.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else np.nan
    return dict(mean=mean, sd=sd, lo=mean - half, hi=mean + half,
                median=float(np.median(v)), min=float(v.min()), max=float(v.max()), n=n)


def groups(records) -> list[dict]:
    """Records grouped by config over seeds, in order of first appearance: each
    {"id", "config" (without the seed), "records", "seeds"}."""
    out = {}
    for rec in records:
        gid = group_id(rec["config"])
        g = out.setdefault(gid, {"id": gid, "records": [],
                                 "config": {k: v for k, v in rec["config"].items()
                                            if k != "seed"}})
        g["records"].append(rec)
    for g in out.values():
        g["records"].sort(key=lambda r: r["config"]["seed"])
        g["seeds"] = [r["config"]["seed"] for r in g["records"]]
    gs = list(out.values())
    keys = _varying(gs)
    return sorted(gs, key=lambda g: [_order(g["config"].get(k)) for k in keys])


def _order(v):
    """A sort key for config values of any type (numbers by value, the rest as JSON)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, canonical({"v": v}))


def _varying(gs) -> list[str]:
    """The config keys that tell the groups apart (the estimator always)."""
    keys = list(dict.fromkeys(k for g in gs for k in g["config"]))
    vary = [k for k in keys
            if len({canonical({"v": g["config"].get(k)}) for g in gs}) > 1]
    return ["estimator"] + [k for k in vary if k != "estimator"]


def _fmt(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True)
    return str(x)


def summary_rows(records) -> tuple[list[str], list[list]]:
    """(header, rows) of summary.csv: one row per config."""
    gs = groups(records)
    keys = _varying(gs)
    head = keys + ["seeds", "failed"]
    for m in METRICS:
        head += [f"{m}_{s}" for s in ("mean", "sd", "ci95_low", "ci95_high", "median",
                                      "min", "max")]
    head += ["unit", "steps", "config_id"]
    rows = []
    for g in gs:
        ok = [r for r in g["records"] if "result" in r]
        row = [g["config"].get(k) for k in keys] + [len(ok), len(g["records"]) - len(ok)]
        for m in METRICS:
            s = _interval([r["result"][m] for r in ok])
            row += [s["mean"], s["sd"], s["lo"], s["hi"], s["median"], s["min"], s["max"]]
        row += [ok[0]["result"]["unit"] if ok else "", g["config"].get("steps"), g["id"]]
        rows.append(row)
    return head, rows


def summary_table(records) -> str:
    """The summary as aligned text (what ``rgraph sweep`` prints)."""
    head, rows = summary_rows(records)
    ki = head.index("seeds")
    cols = head[:ki] + ["seeds", "failed"]
    idx = [head.index(c) for c in cols]
    extra = []
    for m in METRICS:
        extra += [(f"{m} mean ± sd", head.index(f"{m}_mean"), head.index(f"{m}_sd")),
                  ("[95% interval]", head.index(f"{m}_ci95_low"),
                   head.index(f"{m}_ci95_high"))]
    table = [[*cols, *(e[0] for e in extra)]]
    for r in rows:
        cells = [_fmt(r[i]) for i in idx]
        for name, a, b in extra:
            if name.startswith("["):
                cells.append(f"[{_fmt4(r[a])}, {_fmt4(r[b])}]" if _ok(r[a]) else "")
            else:
                cells.append(f"{_fmt4(r[a])} ± {_fmt4(r[b])}" if _ok(r[b]) else _fmt4(r[a]))
        table.append(cells)
    width = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    unit = next((r[head.index("unit")] for r in rows if r[head.index("unit")]), "")
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip()
             for row in table]
    return "\n".join(lines) + (f"\n(losses in {unit}; the interval is the mean's, "
                               f"Student t over seeds)" if unit else "")


def _ok(x):
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _fmt4(x):
    return f"{x:.4g}" if _ok(x) else "nan"


def write_summary(out, records=None) -> tuple[Path, Path]:
    """``out/summary.csv`` and ``out/summary.png`` from the records (all of those under
    ``out/records`` unless given)."""
    out = Path(out)
    records = list(load_records(out).values()) if records is None else records
    if not records:
        raise SweepError(f"{str(out)!r} holds no records (expected {out / RECORDS}/*.json)")
    head, rows = summary_rows(records)
    csv_path = out / "summary.csv"
    tmp = out / f".summary.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in rows:
            w.writerow([_fmt(x) for x in r])
    os.replace(tmp, csv_path)
    return csv_path, plot_summary(records, out / "summary.png")


def plot_summary(records, path) -> Path:
    """Learning curves in the task's unit (``plots.bands``): per config, the mean over
    seeds of the records' block means, with a band of ± one standard deviation."""
    from .. import plots
    gs = groups(records)
    keys = _varying(gs)
    series, unit, optimum = [], "", None
    for g in gs:
        ok = [r["result"] for r in g["records"] if "result" in r]
        if not ok:
            continue
        unit = ok[0]["unit"]
        optimum = ok[0].get("optimum") if optimum is None else optimum
        steps = ok[0]["curve"]["step"]
        curves = [[np.nan if v is None else v for v in r["curve"]["loss"]]
                  for r in ok if r["curve"]["step"] == steps]
        label = ", ".join(f"{k} {_fmt(g['config'].get(k))}" if k != "estimator"
                          else str(g["config"]["estimator"]) for k in keys)
        series.append((label, steps, curves))
    cfg = gs[0]["config"]
    return plots.bands(series, path, optimum,
                       f"{cfg.get('cell')} on {cfg.get('task')}: block means of the "
                       f"training loss", unit)
