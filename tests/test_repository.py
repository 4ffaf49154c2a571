"""What the repository promises about itself: its license and citation files agree with
setup.py, and every repository file its code and docs point at exists."""
import os
import re
import subprocess

import yaml

import lensfm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# lensfm/..., configs/..., experiments/..., tests/... file names (not globs or placeholders).
REFERENCE = re.compile(r"(?<![\w/.<{$-])((?:lensfm|configs|experiments|tests)/[\w./-]*\w"
                       r"\.(?:py|md|json|cff|txt))")
# An absolute path to a file (not a URL, not `<dataset>/.config/...`): outside the repository.
ABSOLUTE = re.compile(r"(?<![\w.~:/>])/(?:[\w-][\w.-]*/)+[\w.-]+\.(?:md|py|json|txt|cff)\b")


def tracked_files() -> list[str]:
  out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
  if out.returncode:  # Not a git checkout (e.g. an unpacked sdist): walk the tree.
    return [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT)
            for f in fs if ".git" not in d]
  return out.stdout.split()


def test_license_citation_and_setup_agree():
  with open(os.path.join(ROOT, "LICENSE")) as f:
    text = f.read()
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  assert "END OF TERMS AND CONDITIONS" in text  # The full text, not a pointer to it.
  with open(os.path.join(ROOT, "CITATION.cff")) as f:
    citation = yaml.safe_load(f)
  assert citation["cff-version"] == "1.2.0" and citation["license"] == "Apache-2.0"
  assert citation["version"] == lensfm.__version__ and citation["title"].startswith("lensfm")
  with open(os.path.join(ROOT, "setup.py")) as f:
    setup = f.read()
  assert 'license="Apache-2.0"' in setup and f'version="{lensfm.__version__}"' in setup
  assert '"tensorboard"' in setup  # `tensorboard --logdir WORKDIR` from the README install.


def test_every_referenced_repository_file_exists():
  missing = []
  for name in tracked_files():
    # Tests name missing files on purpose; results record other machines' runs.
    if not name.endswith((".py", ".md", ".cff")) or name.startswith(("tests/",
                                                                     "experiments/results/")):
      continue
    with open(os.path.join(ROOT, name), errors="ignore") as f:
      text = f.read()
      missing += [f"{name} -> {path} (outside the repository)" for path in ABSOLUTE.findall(text)]
      for ref in REFERENCE.findall(text):
        if "NAME" not in ref and not re.search(r"/\w\.py$", ref) and not os.path.exists(
            os.path.join(ROOT, ref)):
          missing.append(f"{name} -> {ref}")
  assert not missing, missing


def _grep(pattern: str, *folders: str) -> list[str]:
  found = []
  for folder in folders:
    for directory, _, files in os.walk(os.path.join(ROOT, folder)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(directory, f)
          for n, line in enumerate(open(path), 1):
            if re.search(pattern, line):
              found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
  return found


def test_models_compute_what_their_config_says():
  """No platform special case inside a model: precision comes in through the config."""
  assert not _grep(r"default_backend", "lensfm/models")


def test_tasks_and_evaluators_ask_interfaces_instead_of_probing():
  assert not _grep(r"hasattr\(", "lensfm/tasks", "lensfm/evaluators")


def test_experiments_run_as_modules():
  assert not _grep(r"sys\.path", "experiments")
