import json

import pytest

from minicompress import study
from minicompress.__main__ import main


def test_run_study_trains_and_measures_a_baseline_row():
    rows = study.run_study(
        ["baseline"], dataset="digits", model="lenet300", epochs=3, progress=False
    )
    (row,) = rows
    assert row["name"] == "baseline" and 0.8 < row["accuracy"] <= 1.0
    assert row["params"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_a_method_that_does_not_apply_is_skipped_with_a_warning(monkeypatch):
    def needs_bn(model, context):
        raise study.NotApplicable("the model has no BatchNorm layers")

    monkeypatch.setitem(study.METHODS, "needs_bn", needs_bn)
    with pytest.warns(
        UserWarning, match="'needs_bn' skipped: the model has no BatchNorm"
    ):
        rows = study.run_study(
            ["needs_bn"], dataset="digits", model="lenet300", epochs=1, progress=False
        )
    assert [r["name"] for r in rows] == ["baseline"]


def test_unknown_methods_are_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        study.run_study(["magic"], dataset="digits", model="lenet300", epochs=1)


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    code = main(
        [
            "study",
            "--dataset",
            "digits",
            "--model",
            "lenet300",
            "--epochs",
            "1",
            "--methods",
            "baseline",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| baseline |" in printed
    assert (tmp_path / "study.png").stat().st_size > 1000
    assert json.loads((tmp_path / "study.json").read_text())[0]["name"] == "baseline"


def test_cli_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--model", "--epochs", "--out", "--methods"):
        assert flag in text
