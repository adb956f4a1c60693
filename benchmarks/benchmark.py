"""Speed, size and memory of the shipped model on each backend vs the paper's model: the same as
`classroom-fer benchmark` (see classroom_fer/benchmark.py for how each figure is measured).

    nice -n 19 python benchmarks/benchmark.py --threads 1 --json benchmark.json

Targets: speedup_vs_paper >= 20 (PyTorch, batch 1) and >= 1,000 faces/s at batch 32 on 2 cores
with the fastest backend. Run it on an otherwise idle machine for figures worth quoting.
"""
import sys

from classroom_fer.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
