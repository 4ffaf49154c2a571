"""Measurements of lensfm, run as modules from the repository root
(`python -m experiments.benchmarks.vs_torch ...`):

  benchmarks/  speed and memory (train step, input, simulator, build, start-up, accelerator)
  studies/     ML studies (objectives, label efficiency, downstream tasks, scaling...)
  tools/       what makes reference files and runs a lent accelerator's session
  results.py   where and how every script writes its results (results/)
"""
