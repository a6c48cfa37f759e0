"""examples/online_lru.py runs from one command: its --quick smoke run (numpy backend,
a few seconds) trains the stacked LRU with layer-rtrl, SnAp-1 and TBPTT and writes its
tables."""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_online_lru_quick(tmp_path):
    out = tmp_path / "lru"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "online_lru.py"),
                           "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recurrent components" in proc.stdout and "layer-rtrl" in proc.stdout
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["estimator"] for r in rows] == ["layer-rtrl", "snap-1", "tbptt(16)"]
    for r in rows:
        assert float(r["us_per_step"]) > 0 and 0 < float(r["final_bits"]) < 6
    with open(out / "online_lru.csv") as f:
        assert len(list(csv.reader(f))) > 10
