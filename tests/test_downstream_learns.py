"""The downstream recipes learn: 150 CPU steps from scratch on 32x32 simulated Model II
lenses beat chance by a wide margin: they guard the ViT's 'zscore' normalisation and the
ResNet's and the plain CNN's feature standardisation (objective.feature_norm='batch'). One device: this is
about learning, and the sharded step is tested elsewhere.
"""
import os

import jax
import pytest

from lensfm import config_args
from lensfm.tasks import finetune
from lensfm.tasks import pretrain
from lensfm.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 150


@pytest.mark.parametrize("mode,min_auc", [("scratch", 0.8), ("resnet", 0.7), ("cnn", 0.7)])
def test_classification_from_scratch_beats_chance(mode, min_auc, tmp_path):
  c = config_args.load(os.path.join(ROOT, "configs", f"finetune_classify.py:runlocal,mode={mode}"))
  c.update(total_steps=STEPS, checkpoint_every=STEPS, log_every=STEPS, progress_bar=False)
  c.evals.val.update(every=STEPS, num_examples=512, plots_dir="")
  trainer = trainer_lib.Trainer(finetune.prepare_config(c), str(tmp_path),
                                devices=jax.devices()[:1])
  summary = pretrain.train(trainer)
  assert summary["val/auc_macro"] > min_auc, summary
