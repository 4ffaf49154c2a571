"""TFDS builders (ArrayRecord, no TensorFlow needed), one file each:
`lensfm/data/builders/<name>.py` (`deeplense`, `files`, `lensfm_sim`) defining `Builder` (its GeneratorBasedBuilder); `base.py`
holds what they share. Build them with `python -m lensfm.data.build NAME/CONFIG` or
`lensfm.data.build.ensure_built`.
"""
from lensfm import utils


def builder_class(name: str) -> type:
  """The `Builder` of lensfm/data/builders/<name>.py (e.g. 'deeplense', 'lensfm_sim')."""
  return utils.plugin("lensfm.data.builders", name, "Builder", "dataset")
