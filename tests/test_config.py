import pytest

from stages.config import Params, load_params, non_default_params
from stages.errors import UserError

from conftest import REPO


def test_repo_params_file_is_valid():
    p = load_params(REPO / "params.yaml")
    assert p.data.positive_class in p.data.classes


def test_unknown_key_is_named(project):
    project(train__batch_sizee=8)
    with pytest.raises(UserError, match=r"train\.batch_sizee: unknown key"):
        load_params()


def test_invalid_value_is_named(project):
    project(train__batch_size=0)
    with pytest.raises(UserError, match=r"train\.batch_size: Input should be greater than or equal to 1"):
        load_params()


def test_bad_choice_is_named(project):
    project(data__source="ftp")
    with pytest.raises(UserError, match=r"data\.source: Input should be 'kaggle', 'local' or 'synthetic'"):
        load_params()


def test_positive_class_must_exist(project):
    project(data__positive_class="crack")
    with pytest.raises(UserError, match="positive_class"):
        load_params()


def test_missing_file_message(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_non_default_params():
    p = Params.model_validate({"train": {"max_epochs": 3}})
    assert non_default_params(p) == {"train.max_epochs": 3}
