"""Every kind of plug-in is found by name the same way (`lensfm.utils.plugin`), and a bad
name is a UserError naming the config field, the value, what exists and the closest."""
import ml_collections
import pytest

from lensfm import data
from lensfm import errors
from lensfm import evaluators
from lensfm import models
from lensfm import objectives
from lensfm import utils
from lensfm.data import builders


def test_plugin_names_are_the_files_that_define_the_entry_point():
  assert utils.plugin_names("lensfm.models", "Model") == [
      "cnn", "equivariant", "group_pooled", "hybrid", "resnet", "vit"]
  assert "base" not in utils.plugin_names("lensfm.objectives", "Objective")
  assert {"mae", "simclr", "classify"} <= set(utils.plugin_names("lensfm.objectives", "Objective"))
  assert utils.plugin_names("lensfm.evaluators", "Evaluator") == ["downstream", "knn"]
  assert utils.plugin_names("lensfm.data.builders", "Builder") == [
      "deeplense", "files", "lensfm_sim"]


@pytest.mark.parametrize("find,field,closest", [
    (lambda: models.get_model({"name": "vitt"}), "config.model.name='vitt'", "vit"),
    (lambda: objectives.objective_class(ml_collections.ConfigDict(
        {"objective": {"name": "simclrr"}})), "config.objective.name='simclrr'", "simclr"),
    (lambda: evaluators.evaluator_class("kn", "val"), "config.evals.val.type='kn'", "knn"),
    (lambda: builders.builder_class("deeplens"), "dataset='deeplens'", "deeplense"),
    (lambda: data.make_input(ml_collections.ConfigDict({"source": "tfd"}), global_batch_size=1,
                             sharding=None, seed=0), "config.data.source='tfd'", "tfds"),
])
def test_a_bad_name_says_what_exists_and_the_closest(find, field, closest):
  with pytest.raises(errors.UserError, match="is not one of") as info:
    find()
  assert str(info.value).startswith(field) and f'Did you mean "{closest}"?' in str(info.value)


def test_with_defaults_fills_only_missing_fields():
  section = ml_collections.ConfigDict({"a": 1, "views": {"x": 2}})
  filled = utils.with_defaults(section, {"a": 3, "b": None, "views": None})
  assert (filled.a, filled.b, filled.views.x) == (1, None, 2)
  assert utils.with_defaults(None, {"a": 3}).a == 3
