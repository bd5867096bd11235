import pytest

from inspection.config import changed_params, load_params
from inspection.errors import UserError

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
    with pytest.raises(UserError, match=r"data\.source: Input should be 'auto', 'kaggle', 'local' or 'synthetic'"):
        load_params()


def test_positive_class_must_exist(project):
    project(data__positive_class="crack")
    with pytest.raises(UserError, match="positive_class"):
        load_params()


def test_missing_file_message(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_changed_params_are_against_the_committed_file():
    import yaml

    ref = yaml.safe_load((REPO / "params.yaml").read_text())
    p = load_params(REPO / "params.yaml")
    assert changed_params(p, ref) == {}
    p3 = p.model_copy(update={"train": p.train.model_copy(update={"max_epochs": 3})})
    assert changed_params(p3, ref) == {"train.max_epochs": 3}


def test_a_missing_key_is_named(project, tmp_path):
    import yaml

    doc = yaml.safe_load((tmp_path / "params.yaml").read_text())
    del doc["train"]["patience"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"train\.patience: Field required"):
        load_params()


def test_the_schema_carries_no_second_set_of_defaults():
    """params.yaml is the one source of defaults: no field of the schema has a default of its own."""
    from pydantic import BaseModel

    from inspection import config

    def walk(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            assert field.is_required(), f"{prefix}{name} has a default in inspection/config.py; put it in params.yaml"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
    walk(config.Params, "")


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    """A second `train:` block appended: YAML's last-key-wins would hide it; the loader names it."""
    from inspection.config import load_params
    from inspection.errors import UserError

    text = (REPO / "params.yaml").read_text()
    first = next(i for i, line in enumerate(text.splitlines()) if line.startswith("train:")) + 1
    bad = tmp_path / "params.yaml"
    bad.write_text(text + "train:\n  seed: 3\n")
    with pytest.raises(UserError) as err:
        load_params(bad)
    last = len(text.splitlines()) + 1
    assert str(err.value) == f"{bad}: duplicate key 'train' (lines {first} and {last}); keep one"
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1))
    with pytest.raises(UserError, match=r"duplicate key 'seed' \(lines \d+ and \d+\)"):
        load_params(nested)


def test_yaml_syntax_errors_keep_line_and_column(tmp_path):
    from inspection.config import load_params
    from inspection.errors import UserError

    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  source: [auto\n")
    with pytest.raises(UserError, match=r"is not valid YAML at line \d+, column \d+"):
        load_params(bad)


def test_positive_class_other_than_defect_is_refused(project):
    """positive_class: ok would silently invert the labels (synthetic defects written into data/raw/ok/)."""
    project(data__positive_class="ok")
    with pytest.raises(UserError, match="positive_class: must be 'defect'"):
        load_params()


def test_class_folders_match_unicode_normalised(project):
    import unicodedata

    project(data__classes={"defect": ["défaut"], "ok": ["bon"]})
    data = load_params().data
    assert data.class_of(unicodedata.normalize("NFD", "Défaut")) == "defect"   # as macOS writes folder names


def test_a_whole_number_in_exponent_form_names_the_fix(project):
    project(train__max_epochs="2e1")
    with pytest.raises(UserError, match=r"train.max_epochs: must be a whole number, got '2e1'; write 20"):
        load_params()
