"""Wall time of ``pyrunsc run`` of busybox ``true``, and where it goes.

Usage: ``.venv/bin/python benchmarks/run_phases.py [--runs N] [--file-access direct|proxy]``

Prints the median end-to-end wall time of ``pyrunsc run`` over N runs (the
goal is under 300 ms on this machine), then one in-process run broken down by
phase: importing the CLI, loading plugins, reading the spec, importing the
kernel, booting (memory file, platform, mount namespace, ELF load), running
the program, and tearing down. Bytecode caching is left on, as for users.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYRUNSC = Path(sys.executable).parent / "pyrunsc"

PHASES = r"""
import sys, time
t = [time.perf_counter()]
from pyrunsc.core.cli import main
t.append(time.perf_counter())
from pyrunsc.core.plugins import Plugins
plugins = Plugins()
t.append(time.perf_counter())
from pathlib import Path
from pyrunsc.core.config import Config
from pyrunsc.core.spec import load_bundle
spec = load_bundle(Path(sys.argv[1]))
config = Config(file_access=sys.argv[2])
t.append(time.perf_counter())
from pyrunsc.core.loader import boot
t.append(time.perf_counter())
sandbox = boot(plugins, spec, config)
t.append(time.perf_counter())
status = sandbox.kernel.run(sandbox.init)
t.append(time.perf_counter())
sandbox.close()
t.append(time.perf_counter())
names = ["import cli", "load plugins", "read spec", "import kernel", "boot", "run true", "teardown"]
for name, a, b in zip(names, t, t[1:]):
    print(f"{name:14} {1e3 * (b - a):7.1f} ms")
print(f"{'total':14} {1e3 * (t[-1] - t[0]):7.1f} ms")
"""


def make_bundle(root: Path) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "true")
    spec = {"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"]},
            "root": {"path": "rootfs", "readonly": True}}
    (root / "config.json").write_text(json.dumps(spec))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--file-access", default="direct", choices=["direct", "proxy"])
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle")
        state = Path(tmp) / "state"
        times = []
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            subprocess.run([str(PYRUNSC), "--root", str(state), "--file-access", args.file_access, "run",
                            "--bundle", str(bundle), f"bench{i}"], check=True, env=env)
            if i:  # the first run warms the bytecode cache
                times.append(time.perf_counter() - t0)
        print(f"pyrunsc run true ({args.file_access}): median {1e3 * statistics.median(times):.0f} ms, "
              f"min {1e3 * min(times):.0f} ms, max {1e3 * max(times):.0f} ms over {len(times)} runs")
        print("one run in-process, by phase:")
        subprocess.run([sys.executable, "-c", PHASES, str(bundle), args.file_access], check=True, env=env)


if __name__ == "__main__":
    main()
