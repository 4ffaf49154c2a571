"""Loading what a checkpoint holds: its config, its parameters, a model to use.

  load_config(path)              the ConfigDict the run was trained with;
  load_params(path, subtree)     params[subtree] (default the encoder), config, step;
  load_encoder(path)             (encoder params, config): what `init_from` uses;
  load_trained(path)             every parameter and the objective's `extra` state (a
                                 downstream model: encoder and head);
  load_downstream(path, what)    (trained, objective) for evaluation and prediction;
  check_same_backbone, check_init_from: a checkpoint fits config.model and config.data.

  export_encoder(path, out_dir)  the encoder alone as a checkpoint of its own (shipping);
  adopt_init_from(config)        a downstream config takes init_from's backbone and grid.

`path` is a workdir, its checkpoints/ directory, a checkpoints/<step> directory, or the
name of a checkpoint shipped in lensfm/weights/ ('lensfm:tiny').
Only the requested subtrees are read from disk (never the optimizer state), as numpy
arrays, so loading a ViT-H encoder costs its own size in memory.
"""
import dataclasses
import json
import os
import shutil
from typing import Any, Optional

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lensfm import errors
from lensfm import objectives
from lensfm.data import sim_source
from lensfm.data import transforms
from lensfm.objectives import base
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import precision
from lensfm import utils


@dataclasses.dataclass
class Trained:
  params: Any            # The whole params tree (numpy).
  extra: Any             # The objective's extra state ({} if it has none).
  config: ml_collections.ConfigDict  # The config it was trained with.
  step: int
  path: str              # The checkpoint step directory.


# Named checkpoints shipped inside the package: 'lensfm:tiny' -> lensfm/weights/tiny/.
NAMED_PREFIX = "lensfm:"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights")


def named_checkpoints() -> list[str]:
  """Names of the checkpoints shipped in lensfm/weights/ ('tiny', ...)."""
  if not os.path.isdir(WEIGHTS_DIR):
    return []
  return sorted(d for d in os.listdir(WEIGHTS_DIR)
                if os.path.isdir(os.path.join(WEIGHTS_DIR, d, "checkpoints")))


def resolve(path: str) -> str:
  """'lensfm:NAME' -> the shipped checkpoint's directory; any other path unchanged."""
  if not str(path).startswith(NAMED_PREFIX):
    return path
  name = str(path)[len(NAMED_PREFIX):]
  if name not in named_checkpoints():
    raise errors.MissingFileError(f"No named checkpoint {path!r}: lensfm ships "
                            f"{[NAMED_PREFIX + n for n in named_checkpoints()]} (in "
                            f"{WEIGHTS_DIR}).")
  return os.path.join(WEIGHTS_DIR, name)


def find_checkpoint(path: str) -> tuple[str, int]:
  """Resolves 'lensfm:NAME', a workdir, a checkpoints/ dir or a step dir to
  (checkpoints dir, step)."""
  path = os.path.abspath(os.path.expanduser(resolve(path)))
  if not os.path.isdir(path):
    raise errors.MissingFileError(
        f"Checkpoint path {path} does not exist (expected a workdir, its checkpoints/ "
        f"directory or a checkpoints/<step> directory).")
  base_name = os.path.basename(path.rstrip("/"))
  if base_name.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base_name)
  for directory in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      steps = [int(d) for d in os.listdir(directory)
               if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state"))]
      if steps:
        return directory, max(steps)
  raise errors.MissingFileError(f"No checkpoint found under {path} (looked for "
                                "checkpoints/<step>/state).")


def load_config(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict a checkpoint (or workdir) was trained with."""
  directory, step = find_checkpoint(path)
  with open(os.path.join(directory, str(step), "config", "metadata")) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_state(path: str, select=None) -> tuple[Any, Any, int]:
  """(state, config, step): the parts of the train state that `select(tree)` keeps (a
  subtree of the checkpoint's metadata tree; default all of it), as numpy arrays."""
  directory, step = find_checkpoint(path)
  # A damaged file is named (ChecksumError) rather than silently read.
  ckpt_lib.verify_checksums(os.path.join(directory, str(step)))
  config = load_config(os.path.join(directory, str(step)))
  with ocp.CheckpointManager(directory, item_handlers=ckpt_lib.item_handlers()) as manager:
    meta = manager.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    if not tree:
      raise errors.UserError(f"Checkpoint {directory}/{step} holds no saved state (an "
                             f"incomplete or foreign checkpoint); expected a lensfm run's.")
    wanted = tree if select is None else select(tree, f"{directory}/{step}")
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), wanted)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    items = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=select is not None)))
  return items["state"], config, step


def load_params(path: str, subtree: str = "encoder") -> tuple[Any, Any, int]:
  """(params[subtree], config, step) of a checkpoint (default: the backbone)."""

  def select(tree, where):
    if subtree not in tree.get("params", {}):
      raise KeyError(f"Checkpoint {where} has no params/{subtree}; it has "
                     f"{sorted(tree.get('params', {}))}.")
    return {"params": {subtree: tree["params"][subtree]}}

  state, config, step = read_state(path, select)
  return state["params"][subtree], config, step


def load_encoder(path: str) -> tuple[Any, Any]:
  """(encoder params, pretraining config): a pretrained backbone for your own code;
  `path` may be a shipped name such as 'lensfm:tiny'."""
  params, config, _ = load_params(path, "encoder")
  return params, config


def export_encoder(path: str, out_dir: str, *, max_file_bytes: int = 16 * 2**20) -> str:
  """Writes the encoder of checkpoint `path` (params/encoder only, no optimizer state)
  as a checkpoint of its own in out_dir (out_dir/checkpoints/<step>, loadable like any
  workdir) with every file at most `max_file_bytes`, plus out_dir/config.json.

  Written to a temporary directory next to out_dir and moved into place when complete;
  other files in out_dir (e.g. a model card) are kept.
  """
  encoder, config, step = load_params(path, "encoder")
  out_dir = os.path.abspath(out_dir)
  tmp = f"{out_dir}.tmp-{os.getpid()}"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  # Arrays in chunks, and OCDBT data files capped, so no file exceeds the limit.
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=max_file_bytes // 4),
                           encoder)
  with ocp.CheckpointManager(os.path.join(tmp, "checkpoints"),
                             item_handlers=ckpt_lib.item_handlers(),
                             options=ocp.CheckpointManagerOptions(create=True)) as manager:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave({"params": {"encoder": encoder}},
                                  save_args={"params": {"encoder": save_args}},
                                  ocdbt_target_data_file_size=max_file_bytes // 2),
        data=ocp.args.JsonSave({}), config=ocp.args.JsonSave(config.to_dict())), force=True)
    manager.wait_until_finished()
  ckpt_lib.write_checksums(os.path.join(tmp, "checkpoints", str(step)))  # Checked on load.
  utils.write_json_atomically(os.path.join(tmp, "config.json"), config.to_dict())
  too_big = [(f, os.path.getsize(os.path.join(d, f))) for d, _, files in os.walk(tmp)
             for f in files if os.path.getsize(os.path.join(d, f)) > max_file_bytes]
  if too_big:
    shutil.rmtree(tmp)
    raise ValueError(f"Exported files exceed {max_file_bytes} bytes: {too_big}.")
  os.makedirs(out_dir, exist_ok=True)
  old = os.path.join(out_dir, "checkpoints")
  if os.path.exists(old):
    shutil.move(old, f"{tmp}.old")
  os.replace(os.path.join(tmp, "checkpoints"), old)
  os.replace(os.path.join(tmp, "config.json"), os.path.join(out_dir, "config.json"))
  shutil.rmtree(tmp)
  shutil.rmtree(f"{tmp}.old", ignore_errors=True)
  return out_dir


def _fit_resized_recipe(data_config) -> None:
  """A simulator recipe shrunk for speed (recipe_overrides.num_pix, e.g. runlocal) renders
  the adopted grid's whole field of view at its own pixel scale."""
  overrides = data_config.get("recipe_overrides", None)
  if data_config.get("source", None) not in ("sim", "sim_pool") or not overrides or \
      "num_pix" not in overrides or "pixel_scale" not in data_config:
    return
  recipe = sim_source.recipe_by_name(data_config.recipe, overrides)
  scale = getattr(getattr(recipe, "inst", None), "pixel_scale", data_config.pixel_scale)
  overrides.num_pix = int(round(data_config.image_size * data_config.pixel_scale / scale))


# config.model fields that change how a backbone computes, never its parameters.
COMPUTE_FIELDS = ("dtype", "remat", "attention_impl", "activation_dtype", "dot_output_dtype",
                  "weight_grad_transpose")
# Input-grid fields a pretrained encoder fixes for whatever fine-tunes it.
GRID_FIELDS = ("image_size", "pixel_scale", "channels", "normalize")
# Adaptation modes that train a fresh network (init_from only lends its backbone/grid).
FRESH_MODES = ("scratch", "resnet")


def adopt_init_from(config) -> ml_collections.ConfigDict:
  """A copy of a downstream config that takes init_from's backbone and input grid.

  `--config.init_from=lensfm:tiny` (or any checkpoint) then just works with any downstream
  config: config.model becomes the checkpoint's backbone (the config's COMPUTE_FIELDS, such
  as dtype and remat, are kept) and config.data its grid (GRID_FIELDS). With config.mode
  'scratch' the same backbone is trained from random weights (init_from is cleared after adopting);
  'resnet' keeps its ResNet-18 and adopts only the grid.
  """
  path = config.get("init_from", "")
  if not path:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  pre = load_config(path)  # FileNotFoundError naming the path if missing.
  mode = config.get("mode", "finetune")
  changed = []
  if mode != "resnet":
    model = pre.model.to_dict()
    for keep in COMPUTE_FIELDS:
      if keep in config.model:
        model[keep] = config.model[keep]
    if model != config.model.to_dict():
      changed.append(f"model={model}")
    config.model = model
  for field in GRID_FIELDS:
    if field in pre.data and config.data.get(field, None) != pre.data[field]:
      changed.append(f"data.{field}={pre.data[field]!r}")
      config.data[field] = pre.data[field]
  _fit_resized_recipe(config.data)
  if mode in FRESH_MODES:
    config.init_from = ""
    config.backbone_from = path
  if changed:
    logging.info("Adopted from %s: %s", path, ", ".join(changed))
    if jax.process_index() == 0:
      print(f"Adopted from {path}: {', '.join(changed)}", flush=True)
  return config


def load_trained(path: str) -> Trained:
  """Every parameter and the `extra` state of a checkpoint, with its config."""

  def select(tree, where):
    if "params" not in tree:
      raise KeyError(f"Checkpoint {where} holds no params (it has {sorted(tree)}).")
    # An objective without extra state saved an empty dict, which has no leaves to read.
    return {k: tree[k] for k in ("params", "extra") if k in tree and jax.tree.leaves(tree[k])}

  state, config, step = read_state(path, select)
  directory, _ = find_checkpoint(path)
  return Trained(state["params"], state.get("extra", {}), config, step,
                 os.path.join(directory, str(step)))


def load_downstream(path: str, what: str) -> tuple[Trained, base.DownstreamObjective]:
  """(trained, objective) of a fine-tuned checkpoint; fails clearly for one without a
  downstream head (e.g. a pretraining run)."""
  trained = load_trained(path)
  model = precision.get_model(trained.config.model)
  objective = objectives.get_objective(trained.config, model)
  if not isinstance(objective, base.DownstreamObjective):
    name = trained.config.get("objective", {}).get("name", None)
    raise errors.UserError(
        f"{what}: checkpoint {trained.path} was trained with objective {name!r}, which has "
        "no downstream head. Give a fine-tuned workdir (objective 'classify', 'regress' or "
        "'superres'), or fine-tune this one first with --config.init_from.")
  return trained, objective


def check_same_backbone(pretrained, current, path) -> None:
  """Fails with the differing fields when a checkpoint's backbone is not config.model's."""
  as_json = lambda c: json.loads(json.dumps(c.to_dict() if hasattr(c, "to_dict") else dict(c)))
  # Both through JSON, as the checkpoint's copy went: tuples and lists compare equal.
  pre, cur = as_json(pretrained), as_json(current)
  diff = {k: (pre.get(k), cur.get(k)) for k in set(pre) | set(cur)
          if k not in COMPUTE_FIELDS and pre.get(k) != cur.get(k)}
  if diff:
    raise errors.UserError(f"Checkpoint {path} has a different backbone: "
                           + ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}"
                                       for k, (a, b) in sorted(diff.items()))
                           + "." + _runlocal_hint(pre, cur))


def _runlocal_hint(pretrained: dict, current: dict) -> str:
  """A tiny explicit backbone (variant None) against a named variant: a runlocal run."""
  if pretrained.get("variant", "") is None and current.get("variant", None) is not None:
    return (" The checkpoint looks like a `:runlocal` run (a tiny backbone without a "
            "variant): fine-tune it with `:runlocal` too, e.g. "
            "--config=configs/finetune_classify.py:runlocal.")
  return ""


def check_init_from(config) -> None:
  """Before any compilation: the pretrained checkpoint exists and its backbone matches
  config.model (the trainer checks shapes again when it loads it)."""
  path: Optional[str] = config.get("init_from", None)
  if not path:
    return
  pre = load_config(path)  # FileNotFoundError naming the path if missing.
  check_same_backbone(pre.model, config.model, path)
  have, want = pre.data.get("channels", 1), config.data.get("channels", 1)
  if have != want:
    raise errors.UserError(f"Checkpoint {path} was trained on images with {have} "
                           f"channel(s), but config.data.channels={want}.")
  # An encoder only knows the input scale it was trained on: fine-tuning it on images
  # normalised otherwise starts from features it never learned to make.
  have = pre.data.get("normalize", transforms.DEFAULT_NORMALIZE)
  want = config.data.get("normalize", transforms.DEFAULT_NORMALIZE)
  if have != want:
    raise errors.UserError(f"Checkpoint {path} was trained on config.data.normalize="
                           f"{have!r} images, but this run has config.data.normalize={want!r}; "
                           f"pass --config.data.normalize={have} (or pretrain with {want!r}).")
