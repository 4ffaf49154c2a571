"""TFDS builders (ArrayRecord, no TensorFlow needed): `deeplense`, `files`, `lensfm_sim`.

Importing this package registers them with TFDS. Build them with
`python -m lensfm.data.build` or `lensfm.data.build.ensure_built`.
"""
from lensfm.data.builders.base import BadInputError
from lensfm.data.builders.deeplense import Deeplense
from lensfm.data.builders.files import Files
from lensfm.data.builders.lensfm_sim import LensfmSim

BUILDERS = {"deeplense": Deeplense, "files": Files, "lensfm_sim": LensfmSim}
