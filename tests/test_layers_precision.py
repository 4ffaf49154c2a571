"""Models compute what their config says: precision fields, not the backend, set the dtypes;
the platform's fast choice is made once, where models are built (lensfm/train/precision.py)."""
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import mae_vit_b
from lensfm import objectives
from lensfm.models import layers
from lensfm.models import vit
from lensfm.train import loading
from lensfm.train import precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = dict(name="vit", variant=None, width=32, depth=2, mlp_dim=64, num_heads=2,
                patch_size=8, dtype="bfloat16")
CPU_FAST = dict(activation_dtype="float32", dot_output_dtype="float32", weight_grad_transpose=True)


def test_models_never_ask_the_backend_nor_get_switched():
  folder = os.path.join(ROOT, "lensfm", "models")
  models = [n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py"]
  # `vit.X = ...` (or a monkeypatch of it) anywhere: a switch flipped at run time.
  flip = re.compile(rf"^\s*(?:({'|'.join(models)})\.\w+(?:\s*,\s*[\w.]+)*\s*=[^=]|"
                    rf".*setattr\(\s*({'|'.join(models)})\b)", re.M)
  for top in ("lensfm", "experiments", "tests", "configs"):
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      for name in files:
        if name.endswith(".py"):
          with open(os.path.join(d, name)) as f:
            text = f.read()
          where = os.path.relpath(os.path.join(d, name), ROOT)
          assert not (d == folder and "default_backend" in text), where
          assert not flip.search(text), (where, flip.search(text).group(0))


def test_precision_defaults_are_the_compute_dtype():
  p = layers.Precision("bfloat16")
  assert p.compute == p.activations == p.dot_output == jnp.bfloat16
  assert layers.Precision(None).compute == jnp.float32
  p = layers.Precision("bfloat16", "float32", "float32")
  assert (p.compute, p.activations, p.dot_output) == (jnp.bfloat16, jnp.float32, jnp.float32)


@pytest.mark.parametrize("activations,dot_output", [(None, None), ("float32", "float32"),
                                                    ("float32", None), (None, "float32")])
def test_dense_writes_what_its_precision_says(activations, dot_output):
  x = jax.random.normal(jax.random.key(0), (4, 8, 16))
  plain = layers.Dense(12, precision=layers.Precision("bfloat16"))
  dense = layers.Dense(12, precision=layers.Precision("bfloat16", activations, dot_output))
  params = plain.init(jax.random.key(1), x)
  y = dense.apply(params, x)
  assert y.dtype == jnp.dtype(activations or "bfloat16")
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(plain.apply(params, x), np.float32), rtol=0.02, atol=0.02)
  g = jax.grad(lambda p: jnp.sum(dense.apply(p, x).astype(jnp.float32) ** 2))(params)
  assert all(l.dtype == jnp.float32 and np.isfinite(l).all() for l in jax.tree.leaves(g))


def test_fast_choices_are_the_platforms():
  assert precision.fast_choices("cpu") == CPU_FAST
  assert precision.fast_choices("gpu") == precision.fast_choices("tpu") == {}


def test_get_model_fills_only_what_the_config_leaves_unset():
  config = ml_collections.ConfigDict(dict(TINY_VIT, activation_dtype="bfloat16"))
  before = config.to_dict()
  model = precision.get_model(config, backend="cpu")
  assert model.precision == layers.Precision("bfloat16", "bfloat16", "float32", True)
  assert config.to_dict() == before  # The config (and so a checkpoint) stays platform-free.
  gpu = precision.get_model(config, backend="gpu")
  assert gpu.precision == layers.Precision("bfloat16", "bfloat16", None, None)
  resnet = dict(name="resnet", depth=None, stage_sizes=(1,), width=8, stem="small")
  assert precision.get_model(resnet, backend="cpu").dtype == "float32"  # No such fields.


def test_a_model_built_without_the_platform_choice_agrees():
  """Plain bf16 throughout (no resolution) against the CPU choice: the same model."""
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  plain = precision.get_model(TINY_VIT, backend="gpu")
  fast = precision.get_model(TINY_VIT, backend="cpu")
  params = plain.init(jax.random.key(1), x)
  a, b = (np.asarray(m.apply(params, x)["pooled"], np.float32) for m in (plain, fast))
  np.testing.assert_allclose(a, b, atol=0.1)
  assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_shipped_bf16_checkpoint_gives_what_its_config_says():
  params, config = loading.load_encoder("lensfm:small")
  assert "activation_dtype" not in config.model  # Saved before the fields existed.
  model = precision.get_model(config.model, backend="cpu")
  explicit = vit.Model(**{k: v for k, v in config.model.items() if k != "name"}, **CPU_FAST)
  x = jax.random.normal(jax.random.key(0), (2, config.data.image_size, config.data.image_size, 1))
  pooled = lambda m: np.asarray(m.apply({"params": params}, x)["pooled"], np.float32)
  np.testing.assert_array_equal(pooled(model), pooled(explicit))


@pytest.mark.parametrize("backbone", ["vit", "equivariant"])
def test_mae_decoder_computes_as_its_backbone(backbone):
  c = mae_vit_b.get_config("runlocal=True")
  if backbone == "equivariant":
    c.model = dict(name="equivariant", variant=None, irreps="8x0e + 4x1o", depth=1,
                   num_heads=2, patch_size=8)
  model = precision.get_model(c.model, backend="cpu")
  assert objectives.get_objective(c, model).decoder_precision() == model.precision
