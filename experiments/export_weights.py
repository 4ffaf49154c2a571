r"""The older spelling of the task 'export', kept so that existing commands still work:

  python experiments/export_weights.py --workdir=PRETRAIN_WORKDIR --name=NAME  (or --out=DIR)

does what `python -m lensfm.main --config=configs/export.py --config.init_from=PRETRAIN_WORKDIR
--config.name=NAME --workdir=DIR` does (a release step lives in lensfm, not here).
"""
import os
import tempfile

from absl import app
from absl import flags

from lensfm import config_args
from lensfm.tasks import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Pretraining workdir or checkpoints/<step>.")
_NAME = flags.DEFINE_string("name", "", "Ship as lensfm:<name> (lensfm/weights/<name>).")
_OUT = flags.DEFINE_string("out", "", "Or write to this directory instead.")
_MAX_FILE_MIB = flags.DEFINE_integer("max_file_mib", 16, "Largest file written, MiB.")
_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs", "export.py")


def main(argv):
  del argv
  print("Note: experiments/export_weights.py is the older spelling of "
        "`python -m lensfm.main --config=configs/export.py`.", flush=True)
  config = config_args.load(_CONFIG)
  config.update(init_from=_WORKDIR.value or "", name=_NAME.value, out=_OUT.value,
                max_file_mib=_MAX_FILE_MIB.value)
  with tempfile.TemporaryDirectory() as workdir:
    export.run(config, workdir)


if __name__ == "__main__":
  app.run(main)
