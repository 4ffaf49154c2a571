r"""Fingerprints of the vs-PyTorch benchmark's four lensfm train steps, as compiled here.

  python -m experiments.benchmarks.step_hlo --out=DIR [--compare=OTHER_DIR]

Writes DIR/<variant>_<dtype>.hlo (the optimized HLO of each train step with metadata,
stack frames and source-file tables removed) and DIR/hashes.json. Run it in two checkouts
(before and after a change) and `--compare` the other's DIR: equal hashes mean the change
compiles to the same programs, so it cannot move the step times of `vs_torch`.
"""
import hashlib
import json
import os
import re

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.benchmarks import fixed_step
from lensfm.train import trainer as trainer_lib

_OUT = flags.DEFINE_string("out", None, "Where the HLO files and hashes.json go.")
_COMPARE = flags.DEFINE_string("compare", "", "Another run's --out, to compare hashes.")
STEPS = [("Ti/8", "float32"), ("Ti/8", "bfloat16"), ("S/8", "float32"), ("S/8", "bfloat16")]


def program_text(compiled_text: str) -> str:
  """The HLO without what names the source: metadata, stack frames, file tables."""
  lines = []
  for line in compiled_text.splitlines(keepends=True):
    if re.match(r"^(\d+ |FileNames|FunctionNames|FileLocations|StackFrames|HloModule )", line):
      continue
    line = re.sub(r",? metadata=\{[^}]*\}", "", line)
    lines.append(re.sub(r",? stack_frame_id=\d+", "", line))
  return "".join(lines)


def step_text(variant: str, dtype: str) -> str:
  config = fixed_step.mae_config(variant, dtype, 64, 64, 128, 2)
  trainer = trainer_lib.Trainer(config, "/tmp/lensfm_step_hlo", devices=jax.devices()[:1])
  batch = {"image": jax.ShapeDtypeStruct((64, 64, 64, 1), np.float32,
                                         sharding=trainer.data_sharding),
           "label": jax.ShapeDtypeStruct((64,), np.int32, sharding=trainer.data_sharding)}
  compiled = trainer.compile_step().lower(trainer.abstract_with_shardings(), batch).compile()
  return program_text(compiled.as_text())


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  hashes = {}
  for variant, dtype in STEPS:
    name = f"{variant.replace('/', '_')}_{dtype}"
    text = step_text(variant, dtype)
    with open(os.path.join(_OUT.value, f"{name}.hlo"), "w") as f:
      f.write(text)
    hashes[name] = hashlib.sha256(text.encode()).hexdigest()
    print(name, hashes[name][:16], flush=True)
  with open(os.path.join(_OUT.value, "hashes.json"), "w") as f:
    json.dump(hashes, f, indent=2)
  if _COMPARE.value:
    with open(os.path.join(_COMPARE.value, "hashes.json")) as f:
      other = json.load(f)
    same = {k: other.get(k) == v for k, v in hashes.items()}
    print("identical programs:" if all(same.values()) else "programs differ:", same)


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
