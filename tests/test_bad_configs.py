"""Bad input, table-driven: every case exits with code 2 and one line on stderr naming the field."""

import contextlib
import io

import pytest

from overparam.cli import main
from overparam.status import EXIT_BAD_CONFIG

FA = ["--model.rule", "fa"]
PARITY = ["--data", "datamodules.synthetic.SparseParity"]
CASES = [
    (["--model.net.width", "-3"], "width"),
    (["--model.net.width", "abc"], "width"),
    (["--model.net.activation", "swish"], "activation"),
    (["--model.net.parameterization", "muP"], "parameterization"),
    (["--model.net.init_scale", "0"], "init_scale"),
    (["--model.net.symmetric_init", "true", "--model.net.width", "7"], "width"),
    (["--model.net.dropout", "1.5"], "dropout"),
    (["--model.rule", "hebb"], "rule"),
    (["--model.loss", "l1"], "loss"),
    (["--model.optimizer", "lbfgs"], "optimizer"),
    (["--model.lr", "-0.1"], "lr"),
    (["--model.momentum", "1.5"], "momentum"),
    (["--model.layer_lr", "{fc9: 2.0}"], "layer_lr"),
    (["--model.lr_schedule", "exponential"], "lr_schedule"),
    (["--model.optimizer", "sam", "--model.sam_rho", "-1"], "rho"),
    (["--model.replicas", "0"], "replicas"),
    ([*FA, "--model.feedback_scale", "-1"], "feedback_scale"),
    (["--model.widht", "3"], "widht"),
    (["--trainer.max_epochz", "3"], "max_epochz"),
    (["--data.label_noise", "1.5"], "label_noise"),
    (["--data.label_noise", "-0.1"], "label_noise"),
    (["--data.n_train", "0"], "n_train"),
    (["--data.batch_size", "0"], "batch_size"),
    (["--data.n_clusters", "3"], "n_clusters"),
    ([*PARITY, "--data.n", "5", "--data.k", "9", "--data.n_train", "64", "--data.n_test", "64"], "k"),
    (["--data", "datamodules.synthetic.TeacherStudent", "--model.loss", "hinge"], "loss"),
    (["--model.rule", "ist", "--model.net", "lightning_modules.nets.random_features.RandomFeatures"], "ist"),
    (["--model.net", "lightning_modules.nets.factorization.LowRankFactorization", "--model.net.rank", "0"], "rank"),
    (["--data", "datamodules.vision.MNIST", "--data.data_dir", "/nonexistent/overparam"], "/nonexistent/overparam"),
    (["--trainer.callbacks+=callbacks.teacher.TeacherRecovery"], "teacher"),
    (["--trainer.callbacks+=callbacks.sharpness.HessianSharpness", "--trainer.callbacks.tol", "-1"], "tol"),
    (["--ckpt_path", "last"], "last.ckpt"),
]


@pytest.mark.parametrize("args, field", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_config_exits_2_with_one_line_naming_the_field(args, field, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"])
        except SystemExit as exit_info:  # errors found while parsing
            code = exit_info.code
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith(("/", " "))]
    assert code == EXIT_BAD_CONFIG
    assert len(lines) == 1 and lines[0].startswith("error:"), err.getvalue()
    assert field in lines[0], lines[0]
