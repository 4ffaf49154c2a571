"""Speed and memory benchmarks: `python -m experiments.benchmarks.NAME --help`."""
