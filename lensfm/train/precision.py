"""The platform's fast way for a backbone to compute, chosen once where models are built.

A backbone's precision fields (`layers.PrecisionFields`) that its config leaves None are
set here for the backend the run is on; the config itself is not changed, so a checkpoint
trained on one platform computes in the other's fast way when loaded there. A model built
without this computes in its `dtype` throughout: correct everywhere, and what GPUs and TPUs
want anyway.
"""
from typing import Optional

import flax.linen as nn
import jax

from lensfm import models
from lensfm.models import layers


def fast_choices(backend: Optional[str] = None) -> dict:
  """The precision fields a backend's fast path needs ({} where the defaults are it)."""
  if (backend or jax.default_backend()) == "cpu":
    # XLA CPU runs bf16 elementwise ops in float32 with converts either side, reaches its
    # AMX/bf16 kernels only from float32-output dots, and transposes a dot's lhs in a slow
    # strided copy (the smaller operand is the cheaper one).
    return dict(activation_dtype="float32", dot_output_dtype="float32",
                weight_grad_transpose=True)
  return {}


def for_platform(model: nn.Module, backend: Optional[str] = None) -> nn.Module:
  """`model` with the precision fields it leaves None set to `backend`'s fast choice."""
  if not isinstance(model, layers.PrecisionFields):
    return model
  updates = {k: v for k, v in fast_choices(backend).items() if getattr(model, k) is None}
  return model.clone(**updates) if updates else model


def get_model(model_config, backend: Optional[str] = None) -> nn.Module:
  """`models.get_model(model_config)`, fast on `backend` (default: this process's)."""
  return for_platform(models.get_model(model_config), backend)
