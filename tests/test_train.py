import pytest
import torch

from minicompress import data, models, train


def test_seed_everything_makes_initialisation_repeatable():
    train.seed_everything(7)
    a = models.build("lenet5").conv1.weight.clone()
    train.seed_everything(7)
    b = models.build("lenet5").conv1.weight
    assert torch.equal(a, b)


def test_fit_learns_digits_and_evaluate_reports_accuracy():
    train.seed_everything(0)
    train_loader, test_loader = data.loaders("digits", batch_size=64)
    model = models.build("lenet300", input_size=8, hidden=(64, 32))
    before = train.evaluate(model, test_loader)
    history = train.fit(model, train_loader, epochs=4, lr=3e-3, progress=False)
    after = train.evaluate(model, test_loader)
    assert len(history["loss"]) == 4 and history["loss"][-1] < history["loss"][0]
    assert before < 0.3 < 0.9 < after <= 1.0


def test_fit_with_the_same_seed_is_deterministic():
    results = []
    for _ in range(2):
        train.seed_everything(1)
        loader, _ = data.loaders("digits", batch_size=64, seed=1)
        model = models.build("lenet300", input_size=8, hidden=(16,))
        train.fit(model, loader, epochs=1, progress=False)
        results.append(model.classifier.weight.detach().clone())
    assert torch.equal(*results)


def test_callbacks_are_called_at_each_step_in_order():
    events = []

    class Recorder:
        def after_backward(self, model, step):
            # gradients exist and the optimizer has not consumed them yet
            assert model.classifier.weight.grad is not None
            events.append(("backward", step))

        def after_step(self, model, step):
            events.append(("step", step))

        def after_epoch(self, model, epoch):
            events.append(("epoch", epoch))

    inputs, targets = torch.randn(10, 1, 8, 8), torch.arange(10)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, targets), batch_size=5
    )
    model = models.build("lenet300", input_size=8, hidden=(4,))
    train.fit(model, loader, epochs=2, progress=False, callbacks=[Recorder()])
    expected = []
    for epoch in range(2):
        for step in (2 * epoch, 2 * epoch + 1):
            expected += [("backward", step), ("step", step)]
        expected.append(("epoch", epoch))
    assert events == expected


def test_onecycle_schedule_ends_near_zero_learning_rate():
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 1, 8, 8), torch.arange(8)),
        batch_size=4,
    )
    model = models.build("lenet300", input_size=8, hidden=(4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    class LR:
        def after_backward(self, model, step):  # the rate this step is about to use
            seen.append(optimizer.param_groups[0]["lr"])

    train.fit(
        model,
        loader,
        epochs=3,
        optimizer=optimizer,
        schedule="onecycle",
        progress=False,
        callbacks=[LR()],
    )
    assert (
        len(seen) == 6 and max(seen) == pytest.approx(0.1, rel=0.05) and seen[-1] < 1e-4
    )


def test_evaluate_restores_training_mode():
    model = models.build("vgg_small", in_channels=1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(4, 1, 8, 8), torch.arange(4)),
        batch_size=2,
    )
    model.train()
    train.evaluate(model, loader)
    assert model.training
    model.eval()
    train.evaluate(model, loader)
    assert not model.training


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": -1}, ValueError, "epochs must be an int >= 0"),
        ({"epochs": 1, "lr": 0}, ValueError, "lr must be a finite number > 0"),
        ({"epochs": 1, "schedule": "cosine"}, ValueError, "schedule must be one of 'constant', 'onecycle'; got 'cosine'"),
        ({"epochs": 1, "callbacks": [object()]}, TypeError, "callbacks must hold objects with a method"),
    ],
)
def test_fit_rejects_bad_arguments_before_touching_the_model(kwargs, error, match):
    model = models.build("lenet300", input_size=8, hidden=(4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        train.fit(model, [], progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fit_refuses_lr_beside_an_optimizer():
    model = models.build("lenet300", input_size=8, hidden=(4,))
    with pytest.raises(ValueError, match="either optimizer or lr"):
        train.fit(
            model, [], 1, lr=0.1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="cuda.*is_available"):
        train.resolve_device("cuda")
    assert train.resolve_device("auto").type == "cpu"


def test_a_loss_that_takes_inputs_sees_the_batch_and_its_extra_items():
    seen = []

    def loss_fn(outputs, targets, inputs, index):
        seen.append((inputs, index))
        return torch.nn.functional.cross_entropy(outputs, targets)

    x, y, index = torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4)
    model = torch.nn.Linear(3, 2)
    train.fit(
        model, [(x, y, index)], 1, loss_fn=loss_fn, loss_inputs=True, progress=False
    )
    assert torch.equal(seen[0][0], x) and torch.equal(seen[0][1], index)
    with pytest.raises(ValueError, match="a batch holds 3 items.*loss_inputs=True"):
        train.fit(model, [(x, y, index)], 1, progress=False)
