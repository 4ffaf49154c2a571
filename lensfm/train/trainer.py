"""The training loop: one jitted, donated step per iteration on a device mesh.

Used by every objective (self-supervised pretraining, and supervised objectives for
fine-tuning): the loop knows only `lensfm.objectives.base.Objective` and `lensfm.data.Input`.

config fields used here: seed, batch_size (global), total_steps, mesh, sharding_rules,
optim (see optim.py), log_every, checkpoint_every, keep_checkpoints, visualize_every,
nonfinite (a step whose loss or gradient is not finite never changes the state;
  'error' (default) then raises NonFiniteError naming the step at the next log or
  checkpoint step, before any later save; 'skip' continues, counting such steps in the
  logged `nonfinite_count` and `first_nonfinite_step`),
model, objective, data, and optionally
  init_from: a workdir or checkpoint whose encoder replaces the initial params['encoder']
    (fine-tuning; `contract.start_from`); its backbone must match config.model, else a
    UserError says what differs;
  evals: {name: ConfigDict(type=..., every=N, ...)}: evaluators, which the task builds
    (`lensfm.tasks.pretrain`) and `run` calls every N steps (and at the end); each
    returns a dict of metrics, logged as '<name>/<metric>';
  early_stopping: None/{} (off) or dict(metric='val/auc_macro', mode, every, patience,
    min_delta) (see early_stopping.py): `run` keeps the best state in WORKDIR/best/,
    stops when the metric has not improved for `patience` evaluations and reports the
    best step, value and seconds in summary.json['early_stopping']; total_steps is the
    cap. `train_in_memory` applies the same rule to a caller's validate(state).

Fault tolerance: a run started again in its workdir resumes from the newest intact
checkpoint, bit for bit (state, input position; step s's randomness is
fold_in(base_rng, s)); SIGTERM or a first Ctrl-C saves at the next step boundary and
returns normally (the process exits 0), all processes of a multi-process run agreeing
on the step (see _PreemptionFlag); a second Ctrl-C aborts at once; damaged checkpoints
are skipped and set aside (see checkpoint.py); metrics logged after the restored step
are dropped (see writer.py). config.watchdog_seconds (default
watchdog.DEFAULT_WATCHDOG_SECONDS, 0 = off): a process that reaches no step boundary
for that long (an evaluation or a save included) says where it is stuck and exits
with watchdog.WATCHDOG_EXIT_CODE (see watchdog.py).
"""
import collections
import functools
import json
import os
import signal
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax

from lensfm import data as data_lib
from lensfm import errors
from lensfm import objectives
from lensfm.train import checkpoint as ckpt_lib
from lensfm.train import contract
from lensfm.train import distributed
from lensfm.train import early_stopping as early_stopping_lib
from lensfm.train import optim
from lensfm.train import precision
from lensfm.train import sharding
from lensfm.train import watchdog as watchdog_lib
from lensfm.train import writer as writer_lib
from lensfm import utils


# Step s uses fold_in(base_rng, s); initialisation takes a stream no step reaches.
_INIT_STREAM = 2**31 - 1

# Steps the host may dispatch ahead of the devices: two keep the device busy; unbounded
# run-ahead deadlocks multi-process CPU runs (experiments/results/notes.md says how).
MAX_STEPS_IN_FLIGHT = 2


class NonFiniteError(FloatingPointError):
  """Raised when the loss or gradients stop being finite (config.nonfinite='error')."""


def abstract_batch(config) -> dict[str, jax.ShapeDtypeStruct]:
  """Batch shapes from the config, so initialisation never consumes real data."""
  d = config.data
  return {"image": jax.ShapeDtypeStruct(
      (config.batch_size, d.image_size, d.image_size, d.get("channels", 1)), jnp.float32),
          "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}


def check_config(config, mesh) -> None:
  dp = sharding.data_parallel_size(mesh)
  if config.batch_size % dp:
    raise errors.UserError(f"config.batch_size={config.batch_size} must be divisible by the "
                           f"{dp} devices of the mesh's data axes {sharding.DATA_AXES}.")
  if config.get("nonfinite", "error") not in ("error", "skip"):
    raise errors.UserError(f"config.nonfinite={config.nonfinite!r}; expected 'error' or 'skip'.")
  if config.total_steps <= 0:
    raise errors.UserError(f"config.total_steps={config.total_steps} must be positive.")
  early_stopping_lib.parse(config.get("early_stopping", None))  # Named errors, at once.


class Trainer:
  """Builds everything a run needs from the config; `run()` trains."""

  def __init__(self, config, workdir: str, devices=None,
               start_from: Optional[contract.Checkpoint] = None):
    """`start_from`: the resolved config.init_from, when the caller has it already."""
    self.config = config
    self.workdir = workdir
    self.start_from = start_from or contract.start_from(config)
    self.mesh = sharding.make_mesh(config.mesh, devices)
    check_config(config, self.mesh)
    self.data_sharding = sharding.batch_sharding(self.mesh)
    self.model = precision.get_model(config.model)
    self.objective = objectives.get_objective(config, self.model)
    self.base_rng = jax.random.key(config.seed)

    batch = abstract_batch(config)
    init_rng = jax.random.fold_in(self.base_rng, _INIT_STREAM)
    params_shape, _ = jax.eval_shape(self.objective.init, init_rng, batch)
    self.tx, self.schedule = optim.make_optimizer(config, params_shape)
    self.abstract_state = jax.eval_shape(functools.partial(self._init_state, batch=batch), init_rng)
    self.state_sharding = sharding.tree_shardings(
        self.abstract_state, config.get("sharding_rules", ((".*", "fsdp"),)), self.mesh)
    self._init_rng = init_rng
    self._batch = batch

  # -- state ---------------------------------------------------------------------------
  def _init_state(self, rng, batch):
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch)
    params, extra = self.objective.init(rng, zeros)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": self.tx.init(params), "extra": extra,
            "nonfinite_count": jnp.zeros((), jnp.int32),
            "first_nonfinite_step": jnp.full((), -1, jnp.int32)}

  def init_state(self, rng: Optional[jax.Array] = None,
                 start_from: Optional[contract.Checkpoint] = None):
    """A new state, created directly in its shards (no full copy on any device), from
    `rng` (default the config seed's init stream), its encoder from `start_from` (default
    the run's init_from) when there is one."""
    state = self._init_fn(self._init_rng if rng is None else rng)
    start_from = start_from or self.start_from
    return state if start_from is None else self.load_encoder(state, start_from)

  @functools.cached_property
  def _init_fn(self):
    return jax.jit(functools.partial(self._init_state, batch=self._batch),
                   out_shardings=self.state_sharding)

  def load_encoder(self, state, checkpoint: contract.Checkpoint):
    """`state` with params['encoder'] replaced by the checkpoint's encoder."""
    checkpoint.check_backbone(self.config.model)
    encoder = checkpoint.encoder_params(channels=self.config.data.channels)
    expected = state["params"]["encoder"]
    want = {utils.path_to_str(p): l.shape for p, l in jax.tree_util.tree_leaves_with_path(expected)}
    have = {utils.path_to_str(p): l.shape for p, l in jax.tree_util.tree_leaves_with_path(encoder)}
    if want != have:
      diff = sorted(set(want.items()) ^ set(have.items()))[:6]
      raise errors.UserError(f"Encoder in {checkpoint.ref} does not fit config.model: "
                             f"differing (parameter, shape) pairs include {diff}.")
    encoder = jax.tree.map(lambda x, ref: jax.device_put(x.astype(ref.dtype), ref.sharding),
                           encoder, expected)
    _log(f"Initialised the encoder from {checkpoint.ref} (step {checkpoint.step}).")
    # Optimizer moments start from zero either way; only the parameters change.
    return {**state, "params": {**state["params"], "encoder": encoder}}

  def abstract_with_shardings(self):
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        self.abstract_state, self.state_sharding)

  # -- step ----------------------------------------------------------------------------
  def _train_step(self, state, batch):
    step = state["step"]
    rng = jax.random.fold_in(self.base_rng, step)

    def loss_fn(params):
      return self.objective.loss(params, state["extra"], batch, rng, step)

    (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss or gradient leaves the state as it was (the update is dropped),
    # so the state, and any checkpoint of it, stays good whatever the policy. A cond, not
    # a select per leaf: XLA copied every donated optimizer moment before a select read it.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state = jax.lax.cond(finite, self._apply_update, _unchanged,
                                     grads, state["opt_state"], state["params"])
    new_extra = self.objective.update_extra(params, extra, step)
    kept = {"params": params, "opt_state": opt_state,
            "extra": jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_extra, state["extra"])}
    # Named like the loop and the logs name it: the update from state step s is step s + 1.
    first_bad = jnp.where((state["first_nonfinite_step"] < 0) & ~finite, step + 1,
                          state["first_nonfinite_step"])
    new_state = {**kept, "step": step + 1,
                 "nonfinite_count": state["nonfinite_count"] + (~finite).astype(jnp.int32),
                 "first_nonfinite_step": first_bad}
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
               "learning_rate": self.schedule(step),
               "nonfinite_count": new_state["nonfinite_count"],
               "first_nonfinite_step": first_bad}
    return new_state, metrics

  def _apply_update(self, grads, opt_state, params):
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def compile_step(self):
    """The jitted, donated step (state, batch) -> (state, metrics), one per trainer: runs
    that share a trainer (LensBench's seeds and label counts) share its compilation."""
    return self._step_fn

  @functools.cached_property
  def _step_fn(self):
    return jax.jit(self._train_step,
                   in_shardings=(self.state_sharding, self.data_sharding),
                   out_shardings=(self.state_sharding, sharding.replicated(self.mesh)),
                   donate_argnums=(0,))

  @functools.cached_property
  def eval_outputs(self):
    """The objective's jitted eval_outputs(params, extra, batch), one per trainer."""
    return jax.jit(self.objective.eval_outputs)

  def train_in_memory(self, train_input, *, rng: Optional[jax.Array] = None,
                      start_from: Optional[contract.Checkpoint] = None,
                      validate: Optional[Callable[[Any], float]] = None):
    """(state, last metrics on the host, early stopping summary or None) after
    config.total_steps steps on `train_input`, with no checkpoints or logs: short runs
    that are scored at once. With `validate(state) -> float` and config.early_stopping,
    the state is validated every `every` steps (and at the cap), the run stops when
    `patience` validations brought no improvement, and the best state is returned
    (a copy kept on the devices)."""
    rule = early_stopping_lib.parse(self.config.get("early_stopping", None))
    if rule is not None and validate is None:
      raise errors.UserError("config.early_stopping in train_in_memory needs validate(state).")
    if rule is not None and not rule.every:
      raise errors.UserError("config.early_stopping.every must be positive in train_in_memory.")
    tracker = early_stopping_lib.Tracker(rule) if rule is not None else None
    state, best, start = self.init_state(rng, start_from), None, time.perf_counter()
    total = self.config.total_steps
    with jax.set_mesh(self.mesh):
      for step in range(1, total + 1):
        state, metrics = self._step_fn(state, next(train_input))
        if tracker is None or (step % rule.every and step < total):
          continue
        value = float(validate(state))
        if tracker.add(step, value, time.perf_counter() - start):
          best = jax.tree.map(jnp.copy, state)  # The next step donates `state`.
        if tracker.should_stop:
          break
    if tracker is None:
      return state, jax.device_get(metrics), None
    summary = tracker.summary(step, total, time.perf_counter() - start)
    return (state if best is None else best), jax.device_get(metrics), summary

  # -- loop ----------------------------------------------------------------------------
  def run(self, make_evaluators: Optional[Callable[[], dict]] = None) -> dict[str, Any]:
    """Trains to config.total_steps; `make_evaluators()` -> {name: (every, evaluator)}
    builds the evaluators of config.evals (once the run is known not to be finished)."""
    config, workdir = self.config, self.workdir
    if config.get("evals", None) and make_evaluators is None:
      raise errors.UserError(f"config.evals {sorted(config.evals)} need evaluators; run the "
                             "config through its task (lensfm.tasks), which builds them.")
    total = config.total_steps
    rule = early_stopping_lib.parse(config.get("early_stopping", None))
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      utils.write_json_atomically(os.path.join(workdir, "config.json"), config.to_dict())

    train_input = data_lib.make_input(config.data, global_batch_size=config.batch_size,
                                      sharding=self.data_sharding, seed=config.seed)
    ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.get("keep_checkpoints", 3))
    restored = ckpt.restore_latest_intact(self.abstract_with_shardings())
    if restored is not None:
      start, state, data_state = restored
      train_input.set_state(data_state)
      _log(f"Resuming from checkpoint step {start} in {ckpt.directory}.")
    else:
      start, state = 0, self.init_state()
    selection = early_stopping_lib.Selection(rule, workdir, start) if rule else None
    if start >= total or (selection is not None and selection.tracker.should_stop):
      _log(f"Run already finished at checkpoint step {start} (total_steps {total}"
           + (", early stopping" if start < total else "") + "); nothing to do.")
      ckpt.close()
      return _read_summary(workdir)
    save_at = lambda step, state: lambda c: c.save(step, state, train_input.get_state(),
                                                   config.to_dict())
    if selection is not None:
      selection.resume(start, save_at(start, state))

    writer = writer_lib.MetricWriter(workdir, total, start_step=start,
                                     progress=config.get("progress_bar", True))
    evaluators = make_evaluators() if make_evaluators is not None else {}
    if selection is not None:
      evaluators = selection.evaluators(evaluators)
    watchdog = watchdog_lib.Watchdog(
        config.get("watchdog_seconds", watchdog_lib.DEFAULT_WATCHDOG_SECONDS),
        process=(jax.process_index(), jax.process_count()))
    preempted = _PreemptionFlag(on_signal=watchdog.stop_requested)
    step_fn = self.compile_step()
    every = lambda n, s: bool(n) and s % n == 0
    log_every = config.get("log_every", 50)
    t_last, n_last = None, start
    step, metrics, saved = start, {}, start
    in_flight = collections.deque()  # An output of each step still running.

    def save(step):
      self._check_finite(jax.device_get(metrics))  # Never save after a fault ('error').
      watchdog.beat(step, f"saving checkpoint step {step}")
      ckpt.save(step, state, train_input.get_state(), config.to_dict())
      return step
    try:
      with jax.set_mesh(self.mesh):
        for step in range(start + 1, total + 1):
          batch = next(train_input)
          if step == start + 1 and jax.process_count() > 1:
            # Compiled first, then started together: a process that compiles slower
            # (a loaded host) would reach the first collective after gloo's 30 s
            # connection timeout.
            step_fn.lower(state, batch).compile()
            distributed.barrier(f"lensfm_first_step_{start + 1}")
          state, metrics = step_fn(state, batch)
          in_flight.append(metrics["loss"])
          if len(in_flight) > MAX_STEPS_IN_FLIGHT:  # See MAX_STEPS_IN_FLIGHT.
            jax.block_until_ready(in_flight.popleft())
          watchdog.beat(step, f"running step {step + 1} (step {step} dispatched, step "
                              f"{step - len(in_flight)} done)")
          if t_last is None:  # Time after the first (compiling) step, not including it.
            jax.block_until_ready(metrics)
            t_last, n_last = time.perf_counter(), step
            writer.start_clock(step)
          # Decided once per boundary, before saving: a SIGTERM that lands later in this
          # boundary is acted on at the next one, which then saves (never a silent exit).
          stop = preempted.should_stop(step)
          last = step == total or stop
          if every(log_every, step) or last:
            metrics = jax.device_get(metrics)
            now = time.perf_counter()
            if step > n_last:
              metrics["images_per_sec"] = config.batch_size * (step - n_last) / (now - t_last)
            t_last, n_last = now, step
            self._check_finite(metrics)
            writer.write(step, metrics)
          writer.advance(step)
          if every(config.get("checkpoint_every", 1000), step) or last:
            saved = save(step)
          if stop:
            break  # Preempted: no evaluations or pictures, the grace period is short.
          for name, (every_n, evaluator) in evaluators.items():
            if every(every_n, step) or last:
              watchdog.beat(step, f"evaluating {name!r} at step {step}")
              results = evaluator.run(state, step)
              writer.write(step, {f"{name}/{k}": v for k, v in results.items()})
              if (selection is not None and selection.observe(name, step, results,
                                                              save_at(step, state))
                  and saved != step):
                saved = save(step)  # A resumed run never restarts before its best step.
          if selection is not None and selection.tracker.should_stop:
            if saved != step:
              saved = save(step)
            _log(f"Early stopping at step {step}: {rule.metric} has not improved for "
                 f"{rule.patience} evaluations; the best, at step "
                 f"{selection.tracker.best and selection.tracker.best['step']}, is in "
                 f"{selection.best_dir}.")
            break
          if every(config.get("visualize_every", 0), step):
            watchdog.beat(step, f"drawing pictures at step {step}")
            writer.write_pictures(step, {"visualize": self.visualize(state, batch, step)})
        if selection is not None and not preempted.is_set():
          self._report_best(selection, evaluators, watchdog, step)
    finally:
      # Also on errors (NonFiniteError, a failing input): the checkpoint being written in
      # the background is completed, not cut off half-way by the exit.
      watchdog.stop()
      ckpt.close()
      if selection is not None:
        selection.close()
      writer.close()
      preempted.restore()
    compiles = step_fn._cache_size()  # pylint: disable=protected-access
    extra = {"final_step": step, "preempted": preempted.is_set(),
             "train_step_compilations": compiles}
    if selection is not None:
      extra["early_stopping"] = selection.tracker.summary(step, total, selection.seconds())
    summary = writer.summary(extra)
    final = jax.device_get(metrics)  # Already on the host: the last step is always logged.
    if int(final.get("nonfinite_count", 0)):
      _log(f"WARNING: skipped {int(final['nonfinite_count'])} update(s) with a non-finite loss "
           f"or gradient, the first at step {int(final['first_nonfinite_step'])} "
           f"(config.nonfinite='skip').")
    if preempted.is_set():
      _log(f"Received {preempted.signal_name()}: saved a checkpoint at step {step} in "
           f"{ckpt.directory}; exiting. Run the same command again to continue.")
    return summary

  def _report_best(self, selection, evaluators, watchdog, step):
    """The early-stopping evaluator's figures and full report, of the best state (read
    back from WORKDIR/best/), when the evaluator writes them (`final_report`)."""
    report = getattr(evaluators[selection.eval_name][1], "final_report", None)
    if report is None or selection.tracker.best is None:
      return
    watchdog.beat(step, "reporting the best state")
    best = selection.checkpointer()
    best.wait()
    restored = best.restore_latest_intact(self.abstract_with_shardings())
    if restored is not None:
      report(restored[1], restored[0])

  @functools.cached_property
  def _replicate_for_pictures(self):
    """Jitted once per run (not per picture): params, extra and the first 4 images."""
    n = min(4, self.config.batch_size)
    return jax.jit(lambda p, e, im: (p, e, im[:n]), out_shardings=sharding.replicated(self.mesh))

  def visualize(self, state, batch, step) -> str:
    """Every process takes part (arrays span all hosts); the objective writes on process 0.

    Parameters and a few images are first replicated, so the objective's pictures need
    no knowledge of the mesh and its outputs are addressable on every host. Returns the
    PNG's path (the file exists only if the objective draws pictures).
    """
    params, extra, images = self._replicate_for_pictures(
        state["params"], state["extra"], batch["image"])
    path = os.path.join(self.workdir, f"visualize_{step:07d}.png")
    self.objective.visualize(params, extra, {"image": images},
                             jax.random.fold_in(self.base_rng, step), path)
    return path

  def _check_finite(self, metrics):
    if self.config.get("nonfinite", "error") == "error" and int(metrics["nonfinite_count"]) > 0:
      raise NonFiniteError(
          f"Non-finite loss or gradient at step {int(metrics['first_nonfinite_step'])}; the "
          f"update was not applied, no checkpoint was saved after it and earlier ones in "
          f"{os.path.join(self.workdir, 'checkpoints')} are intact. Set "
          f"config.nonfinite='skip' to drop such updates and continue.")


class _PreemptionFlag:
  """SIGTERM or a first Ctrl-C -> the loop saves at the next step boundary and exits 0;
  processes agree on the step.

  One process: watchdog.StopSignals sets a flag that `should_stop` reads.
  Several processes: SIGTERM may reach only some of them (one preempted host), yet all
  must save the same step and stop together. `jax.distributed.initialize` starts JAX's
  preemption service, which catches SIGTERM itself, tells every process, and has them
  agree on one step (one past the furthest any has reached) at which
  `reached_preemption_sync_point` is True everywhere. Until a notice arrives that is a
  local check, so calling it at every step boundary costs no host sync. No Python
  SIGTERM handler is installed then (it would replace the service's), and a Ctrl-C is
  passed on to the service as SIGTERM. With the service turned off
  (jax_enable_preemption_service=False), processes OR their flags with an all-gather at
  each boundary instead, which costs a host sync per step.
  """

  def __init__(self, on_signal=None):
    self._signalled = False  # This process got SIGTERM or SIGINT.
    self._stop = False  # All processes agreed to stop: sticky.
    self._name = "SIGTERM"
    self._on_signal = on_signal
    self._several = jax.process_count() > 1
    self._service = self._several and jax.config.jax_enable_preemption_service
    self._signals = watchdog_lib.StopSignals(self._handle, handle_sigterm=not self._service)

  def _handle(self, name: str):
    """Called by StopSignals' thread as the signal arrives."""
    if not self._signalled:
      self._name = name
    self._signalled = True
    if self._on_signal is not None:
      self._on_signal()
    if self._service and name == "SIGINT":
      os.kill(os.getpid(), signal.SIGTERM)  # The service brings every process along.

  def should_stop(self, step: int) -> bool:
    """Called once at every step boundary by every process, with the same steps."""
    if not self._stop:
      if not self._several:
        self._stop = self._signalled
      elif self._service:
        self._stop = bool(multihost_utils.reached_preemption_sync_point(step))
      else:
        flags = multihost_utils.process_allgather(np.int32(self._signalled))
        self._stop = bool(np.any(flags))
      if self._stop and self._on_signal is not None:
        self._on_signal()  # A peer's notice: this process too must be quick now.
    return self._stop

  def is_set(self) -> bool:
    return self._stop

  def signal_name(self) -> str:
    """What this process received ('SIGTERM' also when only a peer was signalled)."""
    return self._name if self._signalled else "SIGTERM"

  def restore(self):
    self._signals.restore()


def _unchanged(grads, opt_state, params):
  del grads
  return params, opt_state


def _log(msg: str):
  logging.info(msg)
  if jax.process_index() == 0:
    print(msg, flush=True)


def _read_summary(workdir):
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}

