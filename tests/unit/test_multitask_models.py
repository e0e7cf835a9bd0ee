"""Multi-task models (framework/models/multitask.py): a shared trunk, one head per task; their
parameter groups as the gradient engine finds them; per-task labels through the loss and trainer."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from framework.data.base import DatasetSpec, Splits
from framework.data.multitask import MultitaskSpec, MultitaskTensorDataset
from framework.integrators import get_integrator
from framework.losses import MultitaskLoss, head_labels
from framework.models.base import MEAN
from framework.models.multitask import LeNetTrunk, MultitaskModel, ResNet18Trunk
from framework.training.gradients import GradientEngine
from framework.training.statistics import StatisticsSettings
from framework.training.trainer import Trainer, TrainerSettings

TASKS = {"left": 10, "right": 10, "same": 2}


def spec(size: int = 28, tasks: dict[str, int] | None = None) -> MultitaskSpec:
    return MultitaskSpec.of({"image": (1, size, size)}, tasks or TASKS)


def lenet(group_by: str = "trunk", size: int = 28, head_hidden: int | None = 50) -> MultitaskModel:
    torch.manual_seed(0)
    return MultitaskModel(spec(size), partial(LeNetTrunk), group_by=group_by, head_hidden=head_hidden)


def resnet(group_by: str = "trunk") -> MultitaskModel:
    torch.manual_seed(0)
    return MultitaskModel(spec(), partial(ResNet18Trunk, width=4), group_by=group_by)


def batch(n: int = 6, size: int = 28) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([torch.randint(0, c, (n,), generator=g) for c in TASKS.values()], dim=1)
    return {"image": torch.randn(n, 1, size, size, generator=g)}, labels


@pytest.mark.parametrize("size", [28, 36])
def test_lenet_trunk_is_the_literature_s_and_gives_50_features(size):
    trunk = LeNetTrunk((1, size, size))
    assert trunk.conv1[0].out_channels == 10 and trunk.conv1[0].kernel_size == (5, 5)
    assert trunk.conv2[0].out_channels == 20 and trunk.fc[1].out_features == 50 == trunk.out_dim
    assert trunk(torch.zeros(2, 1, size, size)).shape == (2, 50)


def test_heads_are_the_tasks_and_the_mean_selects():
    model = lenet()
    assert model.heads == ("left", "right", "same") and model.selection_head == MEAN
    assert model.modalities == ("image",)
    logits = model(batch()[0])
    assert list(logits) == list(TASKS) and {t: v.shape[1] for t, v in logits.items()} == TASKS


@pytest.mark.parametrize(
    ("build", "group_by", "groups"),
    [
        (lenet, "trunk", ["trunk"]),
        (lenet, "stage", ["trunk.conv1", "trunk.conv2", "trunk.fc"]),
        (resnet, "trunk", ["trunk"]),
        (resnet, "stage", ["trunk.stem", "trunk.stage1", "trunk.stage2", "trunk.stage3", "trunk.stage4"]),
    ],
)
def test_groups_cover_the_trunk_and_every_task_reaches_every_group(build, group_by, groups):
    model = build(group_by)
    found = model.parameter_groups()
    assert list(found) == groups
    grouped = [id(p) for params in found.values() for p in params]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(p) for p in model.trunk.parameters()}
    inputs, labels = batch()
    features = model.encode(inputs)
    losses = MultitaskLoss()(model.classify(features), labels)
    plan = GradientEngine(model, get_integrator("sum")).make_plan(features, losses)
    assert all(plan.reach[g] == tuple(TASKS) for g in groups)
    assert plan.packs == tuple((t,) for t in TASKS)  # every pair of tasks shares the trunk


def test_each_head_is_reached_by_its_own_task_loss_only():
    model = lenet()
    inputs, labels = batch()
    losses = MultitaskLoss()(model(inputs), labels)
    for task, loss in losses.items():
        for other, head in model.task_heads.items():
            grads = torch.autograd.grad(loss, list(head.parameters()), retain_graph=True, allow_unused=True)
            assert all((g is not None) == (other == task) for g in grads), (task, other)


@pytest.mark.parametrize("integrator", ["mmpareto", "mgda", "pcgrad", "upgrad"])
def test_engine_integrates_the_task_gradients_on_every_stage(integrator):
    model = lenet("stage")
    inputs, labels = batch()
    engine = GradientEngine(model, get_integrator(integrator))
    features = model.encode(inputs)
    decisions = engine.backward(features, MultitaskLoss()(model.classify(features), labels), need_decisions=True)
    assert [d.group for d in decisions] == ["trunk.conv1", "trunk.conv2", "trunk.fc"]
    assert all(d.losses == tuple(TASKS) for d in decisions)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_one_joint_loss_with_a_multitask_model_is_a_one_line_error():
    model = lenet()
    with pytest.raises(ValueError, match="loss=one_joint") as raised:
        model(batch()[0], detach_unimodal=True)
    assert "\n" not in str(raised.value)


def test_a_multimodal_dataset_or_bad_option_is_refused():
    with pytest.raises(ValueError, match="multi-task dataset"):
        MultitaskModel(DatasetSpec({"gray": (1, 28, 28), "color": (3, 28, 28)}, 10), partial(LeNetTrunk))
    with pytest.raises(ValueError, match="group_by"):
        MultitaskModel(spec(), partial(LeNetTrunk), group_by="layer")
    two = MultitaskSpec({"a": (1, 28, 28), "b": (1, 28, 28)}, 10, TASKS)
    with pytest.raises(ValueError, match="one input modality"):
        MultitaskModel(two, partial(LeNetTrunk))
    with pytest.raises(ValueError, match="no stages"):
        flat = lambda input_shape: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))  # noqa: E731
        MultitaskModel(spec(), flat, group_by="stage")


def test_linear_heads_with_head_hidden_null():
    model = lenet(head_hidden=None)
    assert all(isinstance(h, torch.nn.Linear) and h.in_features == 50 for h in model.task_heads.values())


# ---------------------------------------------------------------- per-task labels: loss and trainer


def test_head_labels_share_one_column_or_give_each_head_its_own():
    y = torch.tensor([1, 2, 3])
    assert all(t is y for t in head_labels(y, ("multimodal", "audio")).values())
    table = torch.tensor([[1, 0], [2, 1]])
    split = head_labels(table, ("left", "same"))
    assert split["left"].tolist() == [1, 2] and split["same"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="3 heads"):
        head_labels(table, ("multimodal", "gray", "color"))


def test_loss_is_one_cross_entropy_per_task_against_its_own_column():
    model = lenet()
    inputs, labels = batch()
    logits = model(inputs)
    losses = MultitaskLoss()(logits, labels)
    for j, task in enumerate(TASKS):
        assert torch.allclose(losses[task], torch.nn.functional.cross_entropy(logits[task], labels[:, j]))


def test_trainer_reports_accuracy_per_task_and_their_mean():
    inputs, labels = batch(n=40)
    data = MultitaskTensorDataset(inputs, labels, spec())
    model = lenet()
    settings = TrainerSettings(epochs=1, batch_size=16, progress=False, statistics=StatisticsSettings(noise_every=0))
    trainer = Trainer(
        model, Splits(data, data, data), MultitaskLoss(), get_integrator("mmpareto"),
        torch.optim.Adam(model.parameters(), 1e-3), None, settings, torch.device("cpu"),
    )  # fmt: skip
    accuracy = trainer.evaluate(data)
    with torch.no_grad():
        logits = model(inputs)
    for j, task in enumerate(TASKS):
        assert accuracy[task] == pytest.approx(float((logits[task].argmax(1) == labels[:, j]).float().mean()))
    assert accuracy[MEAN] == pytest.approx(sum(accuracy[t] for t in TASKS) / 3)
    results = trainer.fit()
    expected = {f"best/test/acc/{h}" for h in (*TASKS, MEAN)} | {"best/val/acc/mean"}
    assert expected <= set(results)


def test_the_no_op_method_takes_a_multi_task_model_and_an_imbalance_method_refuses_it():
    from framework.methods import METHODS, MethodError, get_method

    model = lenet()
    assert get_method("none").prepare(model) is model
    for name in sorted(set(METHODS) - {"none"}):
        with pytest.raises(MethodError, match="needs a multimodal model"):
            get_method(name).prepare(lenet())
