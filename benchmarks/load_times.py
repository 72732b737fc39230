"""Import and load times: ``import cellwire`` and a 1,000-node workflow file.

Import: the time of the import statement alone, in a fresh interpreter each time (best of
N, median beside it), against ``import langgraph.graph`` timed the same way; then what a
script that loads and runs ``examples/hello.yaml`` pays in all, and ``cellwire run`` of it
as a whole process. Target: ``import cellwire`` under 150 ms.

Load: ``cellwire.formats.load`` of a chain of 1,000 template-transform nodes in cellwire's
YAML (best of N in one process, after a warm-up), against ``yaml.load`` with PyYAML's C safe
loader of the same text (the YAML alone, no checks, no model). Target: under 100 ms.

Prints numbers and ratios; asserts nothing about absolute time.
Run: .venv/bin/python benchmarks/load_times.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _timing import best_and_median

import cellwire

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello.yaml"
IMPORT_TARGET_MS = 150
LOAD_TARGET_MS = 100


def fresh(statements: str, repeat: int) -> tuple[float, float]:
    """Best and median ms of ``statements`` in a fresh interpreter, timed inside it (the
    interpreter's own start is not counted)."""
    code = ("import time; t0 = time.perf_counter()\n" + statements +
            "\nprint(time.perf_counter() - t0)")
    samples = [float(subprocess.run([sys.executable, "-c", code], check=True, text=True,
                                    capture_output=True).stdout.split()[-1]) * 1e3
               for _ in range(repeat)]
    return min(samples), statistics.median(samples)


def whole_process(argv: list[str], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append((time.perf_counter() - t0) * 1e3)
    return min(samples), statistics.median(samples)


def chain_file(folder: Path, n: int = 1000) -> Path:
    wf = cellwire.Workflow("chain")
    wf.add_node("start", "start", variables=[{"variable": "v"}])
    previous, value = "start", ["start", "v"]
    for i in range(n):
        wf.add_node(f"n{i}", "template-transform", template="{{ v }}!", after=previous,
                    variables=[{"variable": "v", "value_selector": value}])
        previous, value = f"n{i}", [f"n{i}", "output"]
    wf.add_node("end", "end", after=previous, outputs=[{"variable": "out",
                                                        "value_selector": value}])
    path = folder / f"chain{n}.yaml"
    cellwire.save(wf, path)
    return path


def row(name: str, best: float, median: float, note: str = "") -> None:
    print(f"{name:42s} {best:8.1f} {median:8.1f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    print(f"{'':42s} {'best ms':>8s} {'median':>8s}")

    ours = fresh("import cellwire", repeat)
    row("import cellwire", *ours, f"(target < {IMPORT_TARGET_MS} ms)")
    try:
        peer = fresh("import langgraph.graph", repeat)
        row("import langgraph.graph", *peer, f"(cellwire {ours[0] / peer[0]:.2f}x)")
    except subprocess.CalledProcessError:
        print("import langgraph.graph: not installed")
    row("import, load and run hello.yaml", *fresh(
        f"import cellwire\ncellwire.load({str(HELLO)!r}).run(name='Ada', store=False)", repeat))
    with tempfile.TemporaryDirectory() as home:
        cli = [sys.executable, "-m", "cellwire.cli", "run", str(HELLO), "-i", "name=Ada",
               "--db", str(Path(home) / "runs.db")]
        row("cellwire run hello.yaml (whole process)", *whole_process(cli, repeat))
        row("python -c pass (whole process)", *whole_process([sys.executable, "-c", "pass"],
                                                             repeat))

        path = chain_file(Path(home))
        text = path.read_text()
        load = best_and_median(lambda: cellwire.load(path), repeat)
        plain = best_and_median(lambda: yaml.load(text, Loader=yaml.CSafeLoader), repeat)
        best, median = (s * 1e3 for s in load)
        row("load a 1,000-node file", best, median, f"(target < {LOAD_TARGET_MS} ms)")
        row("yaml.load(CSafeLoader) of the same text", plain[0] * 1e3, plain[1] * 1e3,
            f"(cellwire {load[0] / plain[0]:.2f}x)")


if __name__ == "__main__":
    main()
