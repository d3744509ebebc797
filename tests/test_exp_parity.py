"""sparse_parity_scaling: online SGD on sparse parity (fresh batches, exact on resume), the support weight
ratio against a brute-force loop, and at CI size the two predicted directions (Barak et al., 2022): steps to
learn grow with n, and the ratio rises on the loss plateau, well before test accuracy does."""

import pytest
import torch
from experiment_runner import run_config, scalars
from train_process import train_process

from callbacks.parity import first_layer, support_weight_ratio
from datamodules.synthetic import SparseParity
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import TwoLayerMLP

LEARNED = 0.95  # steps to learn: the first evaluated step with test accuracy >= this (the CI config stops there)


def epoch_batches(dm: SparseParity, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_online_batches_are_fresh_parity_samples_fixed_by_seed_epoch_and_index():
    dm = SparseParity(n=12, k=3, n_train=40, n_test=8, batch_size=16, seed=5, online=True)
    first = epoch_batches(dm, 0)
    assert [len(x) for x, _ in first] == [16, 16, 16]  # an epoch: n_train samples, rounded up to whole batches
    for x, y in first:
        assert set(x.unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(y, ((x[:, dm.support].prod(dim=1) + 1) / 2).long())  # labels: χ_S(x) as class index
    again = epoch_batches(SparseParity(n=12, k=3, n_train=40, n_test=8, batch_size=16, seed=5, online=True), 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))  # same (seed, epoch, index): same batch
    second = epoch_batches(dm, 1)
    xs = torch.cat([x for x, _ in first + second])
    assert len(torch.unique(xs, dim=0)) > 0.95 * len(xs)  # fresh samples, not one stored set replayed
    assert not any(torch.equal(x, row) for x in xs[:5] for row in dm.train.x)  # the stored train split is never trained on


def test_online_loader_resumed_mid_epoch_yields_the_remaining_batches():
    dm = SparseParity(n=10, k=2, n_train=64, batch_size=8, seed=1, online=True)
    full = epoch_batches(dm, 3)
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 3, "batches_done": 5})
    resumed.sampler.set_epoch(3)
    tail = list(resumed)
    assert len(tail) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(tail, full[5:]))


def test_online_run_interrupted_mid_epoch_resumes_bit_identical(tmp_path):
    """SIGTERM after batch 1 of epoch 2 (4 steps per epoch), then ``--ckpt_path last``: the weights after 24
    steps equal those of an uninterrupted run, so the resumed run drew the same fresh batches."""
    args = ["--config", "configs/ci/sparse_parity_scaling.yaml", "--data.n", "160", "--trainer.max_epochs", "6"]
    args += ["--trainer.enable_progress_bar", "false"]

    def last(root):
        return torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert train_process([*args, "--trainer.default_root_dir", str(full)]).returncode == 0
    signal = ["--trainer.callbacks+=tests.signal_helper.SignalAt", "--trainer.callbacks.epoch", "2", "--trainer.callbacks.batch", "1"]
    stopped = train_process([*args, "--trainer.default_root_dir", str(cut), *signal, "--trainer.callbacks.signal_name", "SIGTERM"])
    assert stopped.returncode == 143 and last(cut)["global_step"] == 10, stopped.stderr[-1000:]
    assert train_process([*args, "--trainer.default_root_dir", str(cut), "--ckpt_path", "last"]).returncode == 0
    a, b = last(full), last(cut)
    assert a["global_step"] == b["global_step"] == 24
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_offline_mode_is_unchanged_and_online_rejects_label_noise_and_replica_orders():
    plain, online = SparseParity(n=20, k=3, seed=2), SparseParity(n=20, k=3, seed=2, online=True)
    plain.prepare_splits(), online.prepare_splits()
    assert torch.equal(plain.train.x, online.train.x) and torch.equal(plain.test.y, online.test.y)  # same stored splits
    assert type(plain.train_dataloader()).__name__ == "TensorBatches"
    with pytest.raises(ConfigError, match=r"^Expected argument `label_noise` to be 0 with online=True"):
        SparseParity(online=True, label_noise=0.1)
    with pytest.raises(ConfigError, match=r"`data.online` to be False"):
        online.batch_order("train", seed=1)


def test_support_weight_ratio_matches_a_brute_force_loop_on_a_hand_built_net():
    net = TwoLayerMLP(input_dim=6, width=4)
    with torch.no_grad():
        net.fc1.weight.copy_(torch.arange(-12.0, 12.0).reshape(4, 6))
    support = torch.tensor([1, 4])
    w = net.fc1.weight.tolist()
    on = [abs(w[j][i]) for j in range(4) for i in (1, 4)]
    off = [abs(w[j][i]) for j in range(4) for i in (0, 2, 3, 5)]
    expected = (sum(on) / len(on)) / (sum(off) / len(off))
    assert first_layer(net) is net.fc1
    assert support_weight_ratio(first_layer(net).weight, support) == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():
        net.fc1.weight.mul_(-3.0)  # scale-free, sign-free
    assert support_weight_ratio(net.fc1.weight, support) == pytest.approx(expected, rel=1e-12)
    for bad in (torch.tensor([]), torch.arange(6), torch.tensor([1, 1]), torch.tensor([6])):
        with pytest.raises(ValueError, match="`support`"):
            support_weight_ratio(net.fc1.weight, bad)


def test_steps_to_learn_grow_with_n_and_the_support_ratio_rises_on_the_loss_plateau(tmp_path):
    """k = 2, online SGD, two seeds at n = 20 and n = 160. Seeds 0-7 tried: n = 160 takes 1.9-3.6× the steps
    of n = 20 (≈ 100 vs ≈ 250). The ratio reaches 1.2× its initial value while the test loss is still
    within 2.2% of its initial value (≈ 1, the hinge loss of a near-zero output) and accuracy near chance
    (≤ 0.7), at 25-60% of the steps to learn (76% once, at n = 20, where an epoch is 6% of the run)."""
    for seed in (0, 1):
        learn = {}
        for n in (20, 160):
            root = tmp_path / f"{n}_{seed}"
            run_config(
                "configs/ci/sparse_parity_scaling.yaml",
                root,
                *("--data.n", str(n), "--model.seed", str(seed), "--data.seed", str(seed), "--seed_everything", str(seed)),
            )
            acc, loss = dict(scalars(root, "test/acc")), dict(scalars(root, "test/loss"))
            ratio = dict(scalars(root, "parity/support_weight_ratio"))
            learn[n] = next(s for s in sorted(acc) if acc[s] >= LEARNED)
            moved = next(s for s in sorted(ratio) if ratio[s] >= 1.2 * ratio[0])  # weight has moved onto S ...
            assert loss[moved] >= 0.95 * loss[0], (n, seed, moved, loss[0], loss[moved])  # ... on the loss plateau ...
            assert moved <= 0.85 * learn[n], (n, seed, moved, learn[n])  # ... well before the accuracy rises
            assert ratio[learn[n]] >= 1.4 * ratio[0], (n, seed, ratio[0], ratio[learn[n]])
        assert learn[160] > 1.4 * learn[20], (seed, learn)
