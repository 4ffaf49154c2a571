"""Backbones. Each lives in its own file `lensfm/models/<name>.py` defining `Model`.

The shared interface, so objectives and heads never depend on the backbone:

  model = get_model(config.model)           # a flax.linen.Module
  out = model.apply({'params': p}, images, train=False, keep=None)
  out['tokens']  # [B, N, D] per-token features (N = kept tokens when `keep` is given)
  out['pooled']  # [B, D]    pooled embedding for heads
  model.token_grid((H, W)) -> (gh, gw)  # the token grid for an image size

`images` are [B, H, W, C] float32. `keep` ([B, K] int32 token indices) is the
token-dropping hook masked autoencoding uses; a backbone that has no tokens to drop
(e.g. a CNN) raises a ValueError naming itself when given one. Backbones expose
`embed_dim` (D) so heads can be sized before init.

`config.model.name` picks the file; every other field of `config.model` is passed
to `Model(...)` as a keyword argument.
"""
import flax.linen as nn

from lensfm import errors
from lensfm import utils


def get_model(model_config, **overrides) -> nn.Module:
  fields = dict(model_config)
  name = fields.pop("name", None)
  fields.update(overrides)
  model_cls = utils.plugin("lensfm.models", name, "Model", "config.model.name")
  try:
    return model_cls(**fields)
  except TypeError as e:
    raise errors.UserError(f"config.model for backbone {name!r}: {e}") from None
