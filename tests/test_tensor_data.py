"""Tensor DataModule: index-slice batches, per-epoch seeded order, DDP shards; synthetic sets."""

import pytest
import torch

from datamodules.synthetic import GaussianMixture, TeacherStudent
from datamodules.tensor import EpochPermutation, Split, TensorBatches
from lightning_modules.checks import ConfigError


def epoch_batches(n, batch_size, seed, epoch):
    perm = EpochPermutation(n, batch_size, shuffle=True, seed=seed)
    perm.set_epoch(epoch)
    return [torch.arange(n) if idx is None else idx for idx in perm]  # None = the whole set, no gather


@pytest.mark.parametrize("n, batch_size", [(100, 32), (64, 64), (7, 3), (1000, 1)])
def test_minibatches_cover_every_sample_once_per_epoch(n, batch_size):
    batches = epoch_batches(n, batch_size, seed=3, epoch=2)
    assert len(batches) == -(-n // batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(n))


def test_order_is_fixed_by_seed_and_epoch():
    same = [torch.cat(epoch_batches(50, 8, seed=1, epoch=4)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], torch.cat(epoch_batches(50, 8, seed=1, epoch=5)))
    assert not torch.equal(same[0], torch.cat(epoch_batches(50, 8, seed=2, epoch=4)))


def test_batches_are_slices_of_the_tensors_and_full_batch_is_the_whole_set():
    x, y = torch.randn(10, 3), torch.arange(10)
    loader = TensorBatches(Split(x, y), batch_size=4, shuffle=True, seed=0)
    for xb, yb in loader:
        assert torch.equal(xb, x[yb])  # y is the sample index here
    ((xb, yb),) = list(TensorBatches(Split(x, y), batch_size=None))
    assert xb is x and yb is y


def test_ddp_shards_partition_the_data_with_equal_step_counts():
    split = Split(torch.arange(103.0)[:, None], torch.arange(103))
    shards = [split.shard(rank, 4, equal=True) for rank in range(4)]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    taken = torch.cat([s.y for s in shards])
    assert len(taken) == 100 and len(set(taken.tolist())) == 100
    assert sum(len(split.shard(rank, 4)) for rank in range(4)) == 103  # evaluation keeps all


def test_gaussian_mixture_xor_labels_and_geometry():
    dm = GaussianMixture(dim=8, n_clusters=4, cluster_std=0.0, xor=True, n_train=400, n_test=10, seed=0)
    dm.prepare_splits()
    means = dm.cluster_means(torch.Generator().manual_seed(0))
    assert torch.allclose(means @ means.T, torch.tensor([[1.0, -1, 0, 0], [-1, 1, 0, 0], [0, 0, 1, -1], [0, 0, -1, 1]]), atol=1e-6)
    # std 0: every point is a mean; antipodal means share a label, orthogonal pairs differ.
    x, y = dm.train.x, dm.train.y
    sign_on_first_axis = (x @ means[0]).round()
    assert torch.equal(y[sign_on_first_axis != 0], torch.zeros_like(y[sign_on_first_axis != 0]))
    assert torch.equal(y[sign_on_first_axis == 0], torch.ones_like(y[sign_on_first_axis == 0]))
    assert dm.num_classes == 2 and dm.output_dim == 1 and dm.input_dim == 8


def test_same_seed_same_data_other_seed_other_data():
    def data(seed):
        dm = GaussianMixture(dim=5, n_train=20, n_test=20, seed=seed)
        dm.prepare_splits()
        return dm.train.x

    assert torch.equal(data(0), data(0)) and not torch.equal(data(0), data(1))


def test_teacher_student_targets_are_the_teacher_outputs_plus_noise():
    dm = TeacherStudent(dim=6, teacher_width=3, output_dim=2, noise_std=0.0, n_train=50, n_test=20, seed=4)
    dm.prepare_splits()
    assert torch.allclose(dm.train.y, dm.teacher(dm.train.x))
    noisy = TeacherStudent(dim=6, teacher_width=3, output_dim=2, noise_std=0.5, n_train=2000, n_test=20, seed=4)
    noisy.prepare_splits()
    residual = noisy.train.y - noisy.teacher(noisy.train.x)
    assert residual.std().item() == pytest.approx(0.5, rel=0.05)
    assert dm.output_dim == 2 and not dm.classification


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_train": 0}, "n_train"),
        ({"batch_size": -1}, "batch_size"),
        ({"label_noise": 1.5}, "label_noise"),
        ({"n_clusters": 3}, "n_clusters"),
    ],
)
def test_bad_data_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        GaussianMixture(**kwargs)


# ---- the public batch order ------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [8, 7, None])
def test_batch_order_is_the_order_the_train_loader_yields(batch_size):
    dm = GaussianMixture(dim=3, n_train=50, n_test=10, batch_size=batch_size, seed=5)
    split, loader = dm.split_on_device("train"), dm.train_dataloader()
    for epoch in (0, 3):
        loader.sampler.set_epoch(epoch)
        yielded, order = list(loader), dm.batch_order("train", epoch=epoch)
        assert len(order) == len(yielded) == (1 if batch_size is None else -(-50 // batch_size))
        for (xb, yb), idx in zip(yielded, order):
            assert torch.equal(xb, split.x if idx is None else split.x[idx])
            assert torch.equal(yb, split.y if idx is None else split.y[idx])
        assert all(torch.equal(a, b) for a, b in zip(order, dm.batch_order("train", seed=5, epoch=epoch)) if a is not None)
    if batch_size is not None:
        other = dm.batch_order("train", seed=6, epoch=3)
        assert not torch.equal(torch.cat(other), torch.cat(order))  # another seed: another order ...
        assert torch.equal(torch.cat(other).sort().values, torch.arange(50))  # ... of the same samples


def test_evaluation_orders_are_in_order_and_unknown_splits_are_refused():
    dm = GaussianMixture(dim=3, n_train=20, n_test=10, batch_size=4, eval_batch_size=6, seed=0)
    assert [idx.tolist() for idx in dm.batch_order("test")] == [list(range(6)), list(range(6, 10))]
    assert torch.equal(dm.split_on_device("train_eval").x, dm.train.x)
    with pytest.raises(ConfigError, match="`split` to be one of train, train_eval, test but got 'val'"):
        dm.batch_order("val")
    with pytest.raises(ConfigError, match="`seed`"):
        dm.batch_order("train", seed=True)


def test_true_double_precision_trains_on_float64_data_and_probes():
    """`--trainer.precision 64-true` converts the weights to float64: the batches, the whole-set evaluation and the
    diagnostics' probe sets follow (class labels stay integers), so the run trains instead of failing on a dtype."""
    import pytorch_lightning as pl
    from quiet_trainer import quiet_trainer

    from callbacks.kernel import KernelDrift
    from datamodules.synthetic import GaussianMixture
    from datamodules.tensor import Split
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    class BatchDtypes(pl.Callback):
        def __init__(self) -> None:
            self.seen = set()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.seen.add((batch[0].dtype, batch[1].dtype))

    data = GaussianMixture(dim=4, n_train=32, n_test=16, batch_size=16, seed=0)
    model = SupervisedModule(TwoLayerMLP(4, 8, 1), lr=0.1, seed=0)
    dtypes, drift = BatchDtypes(), KernelDrift(probe_size=8)
    trainer = quiet_trainer(max_epochs=2, precision="64-true", callbacks=[dtypes, drift])
    trainer.fit(model, datamodule=data)
    assert dtypes.seen == {(torch.float64, torch.int64)}
    assert next(model.parameters()).dtype == torch.float64 and torch.isfinite(trainer.callback_metrics["kernel/drift"])
    split = Split(torch.zeros(2, 3), torch.tensor([0, 1])).to(torch.device("cpu"), torch.float64)
    assert (split.x.dtype, split.y.dtype) == (torch.float64, torch.int64)
