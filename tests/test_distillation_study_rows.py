"""The distillation rows of the trade-off study: student_alone and kd_student."""

import torch

from minicompress import data, study


def test_distillation_rows_train_the_same_small_student_alone_and_distilled():
    rows = study.run_study(
        ["student_alone", "kd_student"],
        dataset="digits",
        model="lenet300",
        epochs=2,
        progress=False,
    )
    assert [r["name"] for r in rows] == ["baseline", "student_alone", "kd_student"]
    student = 64 * 64 + 64 + 64 * 10 + 10  # 8x8 digits into 64 hidden units, 10 classes
    assert rows[1]["params"] == rows[2]["params"] == student
    assert all(r["accuracy"] > 0.5 for r in rows[1:])


def test_both_rows_see_the_same_batches_with_the_same_shifts():
    train_loader, test_loader = data.loaders("digits", batch_size=32, augment=True)
    context = study.StudyContext(
        train_loader, test_loader, torch.zeros(1, 1, 8, 8), 1, 1e-3, torch.device("cpu")
    )
    next(
        iter(train_loader)
    )  # the shared loader's generators move on, as the baseline's did
    batches = []
    for _ in range(2):
        torch.manual_seed(5)  # what the study does before every row
        batches.append(list(study._kd_batches(context))[:3])
    for (x1, y1), (x2, y2) in zip(*batches):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
