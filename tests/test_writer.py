"""What a run shows and leaves behind: an ETA that ignores compilation, pictures in
TensorBoard as images, and the list of outputs at the end."""
import os
import time

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from lensfm.objectives import pictures
from lensfm.train import writer as writer_lib


def remaining_seconds(bar) -> float:
  """The ETA tqdm shows, from its own numbers (its smoothed rate when it has one)."""
  d = bar.format_dict
  rate = d["rate"] or (d["n"] - d["initial"]) / d["elapsed"]
  return (d["total"] - d["n"]) / rate


def test_eta_excludes_the_compiling_first_step(tmp_path):
  writer = writer_lib.MetricWriter(str(tmp_path), 1000, tensorboard=False)
  try:
    time.sleep(3.)  # The first step: compilation.
    writer.advance(1)
    writer.start_clock(1)
    start = time.perf_counter()
    for step in range(2, 52):  # 50 steps as fast as the host goes.
      writer.advance(step)
    per_step = (time.perf_counter() - start) / 50
    # Counting the 3 s compile would say ~(949 / 51) * 3 s ~ 56 s; the steps alone say
    # 949 * per_step (milliseconds here, even on a busy machine).
    assert remaining_seconds(writer._bar) < 10 + 949 * per_step * 2  # pylint: disable=protected-access
  finally:
    writer.close()


def tensorboard_images(workdir) -> dict[str, list[int]]:
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                           size_guidance={event_accumulator.IMAGES: 0})
  acc.Reload()
  return {tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_pictures_reach_tensorboard_as_images(tmp_path):
  path = str(tmp_path / "val_rows.png")
  pictures.save_image_rows({"input": np.random.rand(2, 8, 8, 1)}, path)
  writer_lib.log_pictures(str(tmp_path), 7, [path, str(tmp_path / "missing.png")])
  assert tensorboard_images(tmp_path) == {"val_rows": [7]}
  assert not os.path.exists(tmp_path / "metrics.jsonl")
