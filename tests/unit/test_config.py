"""params.yaml is the one source of parameters; overrides use its dotted keys."""

import pytest
from pydantic import ValidationError

from bertops.config import load_params


def test_repository_params_load():
    params = load_params("params.yaml")
    assert set(params.tasks) >= {"sentiment", "topic", "wic", "code-entities", "define-qa"}
    assert {t.type for t in params.tasks.values()} == {
        "sequence_classification", "pair_classification", "token_classification", "extractive_qa"}


def test_dotted_override_changes_one_key():
    base = load_params("params.yaml")
    over = load_params("params.yaml", {"register.threshold": 0.25})
    assert over.register_.threshold == 0.25
    assert over.model_dump(exclude={"register_"}) == base.model_dump(exclude={"register_"})


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("register:\n  treshold: 0.1\n")
    with pytest.raises(ValidationError, match="treshold"):
        load_params(p)


def test_task_type_needs_its_fields(tmp_path, capsys):
    # checked where tasks are used (bertops.config_tasks), not by load_params: loading parameters
    # does not import the task types, so tokenize and pretrain do not depend on their code
    from bertops.cli import main
    from bertops.config_tasks import check_tasks
    from bertops.errors import BertopsError

    p = tmp_path / "params.yaml"
    p.write_text("tasks:\n  t:\n    type: pair_classification\n    path: x\n    text_fields: [a]\n"
                 "    labels: [no, yes]\n")
    with pytest.raises(BertopsError, match=r"^tasks\.t: pair_classification needs exactly 2 text_fields$"):
        check_tasks(load_params(p))
    assert main(["stage", "validate", "--params", str(p)]) == 2  # refused before any file is read
    assert capsys.readouterr().err == "bertops: error: tasks.t: pair_classification needs exactly 2 text_fields\n"
    assert not (tmp_path / "metrics").exists()


def test_typed_defaults_agree_with_params_yaml():
    # params.yaml documents every default; a params file that leaves a key out must get the same
    # value from the typed config (a swapped default once slipped through unnoticed).
    from bertops.config import Params

    # Not compared: the task declarations, which tasks to fine-tune (empty in code = all declared)
    # and the built-in data's size caps (none in code).
    skip = {"tasks": True, "finetune": {"tasks"}, "data": {"max_examples"}}
    in_file = load_params("params.yaml").model_dump(exclude=skip)
    in_code = Params().model_dump(exclude=skip)
    differ = {f"{section}.{key}": (value, in_code[section][key])
              for section, fields in in_file.items() if isinstance(fields, dict)
              for key, value in fields.items() if in_code[section].get(key) != value}
    assert differ == {}, differ


@pytest.mark.parametrize("section", ["pretrain", "finetune"])
def test_bad_precision_is_a_clear_error_before_any_work(section, capsys):
    from bertops.cli import main

    with pytest.raises(ValidationError, match=f"{section}.precision"):
        load_params("params.yaml", {f"{section}.precision": "bf17"})
    assert main(["stage", section, "-S", f"{section}.precision=bf17"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertops: error: params.yaml:") and f"{section}.precision" in err and "bf16-mixed" in err
