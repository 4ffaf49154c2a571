"""The device mesh, and how parameters and batches are laid out on it.

`config.mesh` is a sequence of (axis name, size) pairs, e.g. (('data', -1), ('fsdp', 2));
one size may be -1 for "all remaining devices". Batches are split over every data-like
axis (`data` and `fsdp`: FSDP is data parallelism whose parameters are also split).
Parameters follow `config.sharding_rules`, (regex, rule) pairs matched with `re.search`
against a leaf's path ('encoder/encoder/block00/mlp/Dense_0/kernel'), first match wins:
  'replicate': a full copy on every device;
  'fsdp': split the largest dimension divisible by the `fsdp` axis size over it
          (replicated if no dimension divides, e.g. biases smaller than the axis).
"""
import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lensfm import errors
from lensfm import utils

DATA_AXES = ("data", "fsdp")


def make_mesh(mesh_config: Sequence[tuple[str, int]], devices=None) -> jax.sharding.Mesh:
  """Builds the mesh `config.mesh` describes over all (or the given) devices."""
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(str(n) for n, _ in mesh_config)
  sizes = [int(s) for _, s in mesh_config]
  missing = [a for a in DATA_AXES if a not in names]
  if missing:
    raise errors.UserError(f"config.mesh={tuple(mesh_config)} lacks axes {missing}; it must name "
                           f"at least {DATA_AXES} (size 1 if unused).")
  if sizes.count(-1) > 1:
    raise errors.UserError(f"config.mesh={tuple(mesh_config)}: at most one axis may have size -1.")
  known = math.prod(s for s in sizes if s != -1)
  if known <= 0 or len(devices) % known:
    raise errors.UserError(f"config.mesh={tuple(mesh_config)} does not divide the {len(devices)} "
                           f"available devices.")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise errors.UserError(f"config.mesh={tuple(mesh_config)} has {math.prod(sizes)} devices but "
                           f"{len(devices)} are available; use -1 for one axis to take the rest.")
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), names, axis_types=axis_types, devices=devices)


def batch_sharding(mesh) -> NamedSharding:
  """Leading axis split over the data-like axes, everything else whole."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh) -> int:
  return math.prod(mesh.shape[a] for a in DATA_AXES)


def _fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  if fsdp_size == 1:
    return P()
  candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp_size == 0]
  if not candidates:
    return P()
  spec = [None] * len(shape)
  spec[int(candidates[0])] = "fsdp"
  return P(*spec)


def partition_specs(tree: Any, rules: Sequence[tuple[str, str]], mesh) -> Any:
  """PartitionSpec for each leaf of `tree` (arrays or ShapeDtypeStructs)."""
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]
  fsdp_size = mesh.shape["fsdp"]

  def spec_for(path, leaf):
    name = utils.path_to_str(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, rule in compiled:
      if pattern.search(name):
        if rule == "replicate" or not shape:
          return P()
        if rule == "fsdp":
          return _fsdp_spec(shape, fsdp_size)
        raise errors.UserError(f"config.sharding_rules: rule {rule!r} for {pattern.pattern!r} is "
                               f"not one of 'replicate', 'fsdp'.")
    return P()  # Unmatched leaves are replicated.

  return jax.tree_util.tree_map_with_path(spec_for, tree)


def tree_shardings(tree: Any, rules, mesh) -> Any:
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(tree, rules, mesh),
                      is_leaf=lambda x: isinstance(x, P))
