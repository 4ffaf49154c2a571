"""A trained classifier scored on data whose classes are spelt or ordered differently
(folders lens / nonlens, a lens finder's non_lensed / lensed): labels follow the names."""
import numpy as np
import pytest

from lensfm import errors
from lensfm.data import model_input
from lensfm.tasks import evaluate

FINDER = ("non_lensed", "lensed")


def test_folder_names_match_a_lens_finders_classes():
  assert model_input.match_classes(FINDER, ("lens", "nonlens")).tolist() == [1, 0]
  assert model_input.match_classes(FINDER, ("Lenses", "Non-Lenses")).tolist() == [1, 0]
  assert model_input.match_classes(FINDER, FINDER) is None
  assert model_input.match_classes(FINDER, ()) is None
  assert model_input.match_classes(("a", "b", "c"), ("c", "a", "b")).tolist() == [2, 0, 1]


def test_explicit_map_and_clear_errors():
  assert model_input.match_classes(FINDER, ("arc", "blob"),
                                   "arc=lensed,blob=non_lensed").tolist() == [1, 0]
  with pytest.raises(errors.UserError, match="class_map='arc=<one of the model's"):
    model_input.match_classes(FINDER, ("arc", "blob"))
  with pytest.raises(errors.UserError, match=r"\['spiral'\] are not the model's classes"):
    model_input.match_classes(FINDER, ("arc", "blob"), "arc=spiral")
  with pytest.raises(errors.UserError, match="twice"):
    model_input.match_classes(FINDER, ("arc", "blob"), "arc=lensed,blob=lensed")


def test_evaluate_scores_folder_labels_in_the_models_classes(monkeypatch):
  monkeypatch.setattr(model_input, "describe",
                      lambda _: model_input.DataFacts(1, (), ("lens", "nonlens")))
  labels = np.array([0, 1, -1, 0])
  out = evaluate.labels_in_model_classes(labels, FINDER, {"source": "tfds"}, "")
  assert out.tolist() == [1, 0, -1, 1]
  # Simulated data carry the model's own classes: untouched.
  assert evaluate.labels_in_model_classes(labels, FINDER, {"source": "sim"}, "") is labels
