"""The interfaces objectives implement: `Objective` (all the trainer relies on) and
`DownstreamObjective` (what evaluation, reports and prediction rely on)."""
from typing import Any, Optional

import flax.linen as nn
import jax

PyTree = Any



class EncoderWithHead(nn.Module):
  """The backbone and a head on its pooled embedding: params {'encoder', 'head'}."""
  encoder: nn.Module
  head: nn.Module

  def __call__(self, images, train: bool = True):
    pooled = self.encoder(images, train=train)["pooled"]
    return pooled, self.head(pooled)

class Objective:
  """A self-supervised (or supervised) objective around a backbone.

  Parameters are a dict whose 'encoder' entry holds the backbone's parameters, so
  downstream tasks can take the encoder from any objective's checkpoint. `extra`
  is objective state that is not trained by gradients (EMA targets, DINO centres);
  it is checkpointed and sharded like the parameters.
  """

  def __init__(self, config, model):
    self.config = config
    self.model = model

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[PyTree, PyTree]:
    """Returns (params, extra) for a batch of the shapes training will use."""
    raise NotImplementedError

  def loss(self, params, extra, batch, rng, step) -> tuple[jax.Array, tuple[dict, PyTree]]:
    """Returns (scalar loss, (metrics dict of scalars, extra)). Runs inside jit."""
    raise NotImplementedError

  def update_extra(self, params, extra, step) -> PyTree:
    """Called inside jit after the optimizer step (e.g. EMA targets)."""
    del params, step
    return extra

  def visualize(self, params, extra, batch, rng, path: str) -> None:
    """Optionally writes a picture of what the objective does to `path` (a PNG).

    Called on every process with replicated params and a few replicated images; only
    process 0 should write.
    """
    del params, extra, batch, rng, path


class DownstreamObjective(Objective):
  """A supervised objective whose trained model is evaluated, reported and used to predict.

  Tasks and evaluators rely only on these methods, so a new downstream task is one
  objective file (subclassing this) plus a config. Evaluation runs in three steps:
  `eval_outputs` per batch inside jit, `summarize` over all real examples on the host,
  `plots` (with `pictures` of the first batch) for the figures.
  """
  task: str = ""  # The name summaries and reports give the task ('classification', ...).
  # Whether predict keeps the answer for a suspicious input (constant, all-zero or
  # non-finite image): a class or a physical value would be a confident guess about
  # nothing, so by default the row's answer columns stay empty and its flag says why.
  answers_suspicious_inputs: bool = False
  # For a model that maps LR images onto an HR grid, the HR/LR pixel ratio (evaluation
  # then also takes paired HR/LR files); None for every other task.
  paired_lr_factor: Optional[int] = None

  @classmethod
  def prepare_config(cls, config, training_batches):
    """Before training: fills config fields that depend on the data (e.g. target
    statistics), so the checkpoint carries them to evaluation and prediction.
    `training_batches(num_examples)` iterates over that many training examples."""
    del training_batches
    return config

  def predict(self, params, extra, images) -> dict[str, jax.Array]:
    """Per-image outputs for images normalised as in training. Runs inside jit."""
    raise NotImplementedError

  def eval_outputs(self, params, extra, batch) -> dict[str, jax.Array]:
    """Per-example outputs `summarize` needs (predictions and truths). Runs inside jit."""
    raise NotImplementedError

  def summarize(self, outputs) -> tuple[dict[str, float], dict[str, Any]]:
    """(scalar metrics, details such as curves) from concatenated `eval_outputs` (numpy)."""
    raise NotImplementedError

  def plots(self, result, details, pictures, path) -> list[str]:
    """Writes the task's PNG figures, `path(name)` each; returns their paths."""
    del result, details, pictures, path
    return []

  def pictures(self, params, extra, batch) -> Optional[dict[str, jax.Array]]:
    """Images of a batch for `plots` (e.g. SR triptychs), or None. Runs inside jit."""
    del params, extra, batch
    return None

  def input_size(self, image_size: int) -> int:
    """Side of the images `predict` takes for a model trained on `image_size` images."""
    return image_size

  def output_columns(self) -> list[str]:
    """Names of the predict CSV's columns (besides the file name)."""
    raise NotImplementedError

  def outputs_in_input_units(self, outputs, denormalize) -> dict[str, jax.Array]:
    """`predict` outputs with the images among them mapped from the normalised units of
    the input back to the input's own by `denormalize(values [B, ...])`, so predict
    writes them in the units the user gave. Runs inside jit. By default no output is
    an image (classes and physical values have units of their own)."""
    del denormalize
    return outputs

  def output_rows(self, outputs, names, directory) -> list[list]:
    """CSV rows from `predict` outputs (numpy), one per image; may write files there."""
    raise NotImplementedError

  def output_flags(self, outputs) -> list[str]:
    """Per image, what makes its answer doubtful ('' if nothing), for predict's `flag`
    column (e.g. a regression value outside the range seen in training)."""
    return [""] * len(next(iter(outputs.values())))
