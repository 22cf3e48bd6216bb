"""`make bench`: run every bench/bench_*.py in turn and gather their markdown tables.

Each benchmark writes bench/results/<name>.json and bench/results/<name>.md itself and compares
against a baseline measured in the same run. A failing benchmark is reported, not fatal to the
others; the exit code says whether all of them ran. Benchmarks are never part of `make test`.
Pass names to run a subset: `python bench/run_all.py sim world_model`; extra flags after `--`
go to every benchmark (e.g. `-- --quick`).
"""

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    names = argv[: argv.index("--")] if "--" in argv else argv
    scripts = sorted(BENCH.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    if not scripts:
        print(f"no benchmarks match {names}; have: {[s.stem for s in sorted(BENCH.glob('bench_*.py'))]}")
        return 1
    RESULTS.mkdir(exist_ok=True)
    failed = []
    sections = []
    for script in scripts:
        print(f"=== {script.stem} ===", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *extra])
        elapsed = time.monotonic() - start
        print(f"=== {script.stem}: exit {code} after {elapsed:.0f} s ===", flush=True)
        if code != 0:
            failed.append(script.stem)
        table = RESULTS / f"{script.stem.removeprefix('bench_')}.md"
        body = (
            table.read_text()
            if table.is_file() and table.stat().st_mtime >= time.time() - elapsed - 1
            else "(no results)"
        )
        sections.append(f"## {script.stem} (exit {code}, {elapsed:.0f} s)\n\n{body}\n")
    (RESULTS / "SUMMARY.md").write_text("# Benchmark results\n\n" + "\n".join(sections))
    print(f"summary: {RESULTS / 'SUMMARY.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
