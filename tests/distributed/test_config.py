"""``distributed.*`` and ``model.sync_bn``: one-line errors before anything runs; the sampler's
global batches do not depend on the world size."""

from __future__ import annotations

import pytest
import torch

from framework.data.base import DatasetSpec, TensorMultimodalDataset, iterate_batches
from framework.data.sharding import ShardedBatches, sharded_eval_batches, sharded_train_batches
from framework.config.validation import ConfigError, validate

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize(
    ("world", "overrides", "message"),
    [
        (1, ["distributed.backend=mpi"], "distributed.backend='mpi': valid values: auto | gloo | nccl"),
        (1, ["distributed.timeout_s=0"], "distributed.timeout_s=0"),
        (3, ["trainer.batch_size=64"], "trainer.batch_size=64: the global batch must split into 3 equal shards"),
        (2, ["device=cpu", "model.sync_bn=true"], "model.sync_bn=True: torch's SyncBatchNorm runs on CUDA only"),
        (2, ["device=cpu", "distributed.backend=nccl"], "distributed.backend='nccl': nccl needs CUDA devices"),
        (2, ["method=pmr"], "method.name='pmr': not supported on 2 ranks"),
    ],
)
def test_bad_distributed_settings_are_one_line_errors(compose_cfg, monkeypatch, world, overrides, message):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    cfg = compose_cfg("experiment=smoke", *overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_sync_bn_is_the_framework_s_key_not_the_model_s(compose_cfg):
    from framework.config import build
    from framework.data.synthetic import synthetic_splits

    cfg = compose_cfg("experiment=smoke", "model.sync_bn=true")
    validate(cfg)  # one process: no SyncBatchNorm, nothing to refuse
    spec = synthetic_splits({"a": {"dim": 4, "signal": 1.0}}, train_size=8, val_size=4, test_size=4).spec
    assert build(cfg.model, spec=spec) is not None


def dataset(n: int) -> TensorMultimodalDataset:
    return TensorMultimodalDataset(
        {"x": torch.arange(n, dtype=torch.float32)[:, None]}, torch.zeros(n), DatasetSpec({"x": (1,)}, 2)
    )


@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_global_batch_does_not_depend_on_the_world_size(world):
    n, batch = 70, 8  # 8 full batches and 6 left: 6, 6 and 4 of them on 1, 2 and 4 ranks
    single = [
        sorted(int(i) for i in x["x"][:, 0].tolist())
        for x, _ in iterate_batches(dataset(n), batch, True, torch.Generator().manual_seed(7))
    ]
    sharded = []
    generators = [torch.Generator().manual_seed(7) for _ in range(world)]
    per_rank = [
        [
            sorted(int(i) for i in x["x"][:, 0].tolist())
            for x, _ in sharded_train_batches(dataset(n), batch, r, world, generators[r])
        ]
        for r in range(world)
    ]
    for step in range(len(per_rank[0])):
        assert len({len(ranks[step]) for ranks in per_rank}) == 1, "equal shards"
        sharded.append(sorted(i for ranks in per_rank for i in ranks[step]))
    assert sharded[:8] == single[:8]
    assert set(sharded[8]) <= set(single[8]) and len(sharded[8]) == 6 - 6 % world
    # the generator ends the epoch where one process's does
    reference = torch.Generator().manual_seed(7)
    list(iterate_batches(dataset(n), batch, True, reference))
    assert all(torch.equal(g.get_state(), reference.get_state()) for g in generators)


def test_the_loader_path_draws_like_a_random_sampler():
    """A disk dataset goes through a DataLoader: the same permutation and the same generator state."""
    from torch.utils.data import DataLoader

    for n in (64, 70):
        reference = torch.Generator().manual_seed(3)
        single = [b.tolist() for b in DataLoader(list(range(n)), batch_size=8, shuffle=True, generator=reference)]
        generator = torch.Generator().manual_seed(3)
        sharded = DataLoader(
            list(range(n)), batch_sampler=ShardedBatches(n, 8, 0, 1, generator, like_loader=True), generator=generator
        )
        assert [b.tolist() for b in sharded] == single
        assert torch.equal(generator.get_state(), reference.get_state())


def test_evaluation_shards_cover_every_sample_once():
    seen = sorted(
        int(v) for r in range(3) for x, _ in sharded_eval_batches(dataset(10), 4, r, 3) for v in x["x"][:, 0].tolist()
    )
    assert seen == list(range(10))


def test_only_the_no_op_method_runs_on_several_ranks(compose_cfg, monkeypatch):
    from framework.methods import METHODS

    assert [name for name, cls in METHODS.items() if cls.data_parallel] == ["none"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    validate(compose_cfg("experiment=smoke", "method=mmpareto"))  # an integrator choice, no imbalance method
