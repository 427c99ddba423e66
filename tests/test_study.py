import json

import pytest
import torch

from minicompress import measure, study
from minicompress.__main__ import main


def test_run_study_trains_and_measures_a_baseline_row():
    rows = study.run_study(
        ["baseline"],
        dataset="digits",
        model="lenet300",
        epochs=3,
        progress=False,
        latency_rounds=1,
    )
    (row,) = rows
    assert row["name"] == "baseline" and 0.8 < row["accuracy"] <= 1.0
    assert row["latency_ms"] > 0 and row["latency_b64_ms"] > 0
    assert row["params"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert row["size_format"] == "dense"  # nothing pruned: no sparse format is smaller


def test_a_method_that_does_not_apply_is_skipped_with_a_warning(monkeypatch):
    def needs_bn(model, context):
        raise study.NotApplicable("the model has no BatchNorm layers")

    monkeypatch.setitem(study.METHODS, "needs_bn", needs_bn)
    with pytest.warns(
        UserWarning, match="'needs_bn' skipped: the model has no BatchNorm"
    ):
        rows = study.run_study(
            ["needs_bn"],
            dataset="digits",
            model="lenet300",
            epochs=1,
            progress=False,
            latency_rounds=1,
        )
    assert [r["name"] for r in rows] == ["baseline"]


def test_a_pruned_model_is_sized_in_its_smallest_format(monkeypatch):
    def zero_most_weights(model, context):
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight[:, 1:] = 0.0  # keep one column: about 1 % of weights
        return model

    monkeypatch.setitem(study.METHODS, "zeros", zero_most_weights)
    rows = study.run_study(
        ["zeros"],
        dataset="digits",
        model="lenet300",
        epochs=1,
        progress=False,
        latency_rounds=1,
    )
    dense = measure.size_bytes(study.build_for("lenet300", "digits"))
    assert rows[1]["size_format"] in ("csr", "bitmask")
    assert rows[1]["size_bytes"] < dense / 5 and rows[0]["size_format"] == "dense"


def test_latency_is_timed_at_one_image_and_at_a_batch_for_every_row(monkeypatch):
    timed = []

    def compare_latency(models, example_input, rounds, threads):
        timed.append((list(models), example_input.shape[0], rounds))
        return {name: float(example_input.shape[0]) for name in models}

    monkeypatch.setattr(measure, "compare_latency", compare_latency)
    rows = study.run_study(
        ["baseline", "magnitude_90"],
        dataset="digits",
        model="lenet300",
        epochs=1,
        progress=False,
        latency_rounds=3,
    )
    # One interleaved call per batch size, every row in it.
    names = ["baseline", "magnitude_90"]
    assert timed == [(names, 1, 3), (names, study.LATENCY_BATCH, 3)]
    assert [(r["latency_ms"], r["latency_b64_ms"]) for r in rows] == [(1.0, 64.0)] * 2
    assert "latency, batch 64" in measure.format_table(rows)


def test_unknown_methods_are_rejected():
    with pytest.raises(ValueError, match="methods must be one of .*got 'magic'"):
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
    assert "one forward pass of 64 images" in printed
    assert (tmp_path / "study.png").stat().st_size > 1000
    assert json.loads((tmp_path / "study.json").read_text())[0]["name"] == "baseline"


def test_cli_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--model", "--epochs", "--out", "--methods"):
        assert flag in text
