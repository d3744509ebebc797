"""Bad input, table-driven: every case exits with code 2 and one line on stderr naming the field."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import resolved_config

from overparam.cli import main
from overparam.status import EXIT_BAD_CONFIG

TRAIN = [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts" / "train.py")]

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
    (["--model.optimizer", "sam", "--trainer.accumulate_grad_batches", "2"], "trainer.accumulate_grad_batches"),
    (["--model.optimizer", "entropy_sgd", "--trainer.accumulate_grad_batches", "4"], "trainer.accumulate_grad_batches"),
    (["--model.optimizer", "sam", "--trainer.precision", "16-mixed"], "trainer.precision"),
    (["--model.optimizer", "entropy_sgd", "--trainer.precision", "16-mixed"], "trainer.precision"),
]


@pytest.mark.parametrize("args, field", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_config_exits_2_with_one_line_naming_the_field(args, field, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(
                [*args, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
            )
        except SystemExit as exit_info:  # errors found while parsing
            code = exit_info.code
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code == EXIT_BAD_CONFIG
    assert len(lines) == 1 and lines[0].startswith("error:"), err.getvalue()
    assert field in lines[0], lines[0]
    assert not (tmp_path / "lightning_logs").exists()  # refused before any log is written


BAD_YAML = "model:\n  init_args:\n    lr: [0.1\n"
MESSAGES = [  # (args, what the one line must hold: the full option or file, the value, what is allowed or meant)
    (["--data.batch_size", "ten"], ["data.batch_size", "'ten'", "integer or null"]),
    (["--model.lrr", "0.1"], ["model.lrr", "did you mean model.lr?"]),
    (["--model.net.widht", "3"], ["model.net.widht", "did you mean model.net.width?"]),
    (["--data", "GausianMixture"], ["data", "'GausianMixture'", "did you mean GaussianMixture?"]),
    (["--model.net", "SmallConvNett"], ["model.net", "'SmallConvNett'", "did you mean SmallConvNet?"]),
    (["--model.net.activation", "swish"], ["model.net.activation", "'swish'", "relu, tanh, erf, quadratic, gelu, linear"]),
    (["--data.n_train", "-5"], ["data.n_train", "-5", "positive integer"]),
    (["--trainer.max_epochs", "many"], ["trainer.max_epochs", "'many'", "integer or null"]),
    (["--config", "no/such/file.yaml"], ["no/such/file.yaml", "No such file"]),
    (["--config", "{tmp}/bad.yaml"], ["bad.yaml", "valid YAML", "line 4"]),
]


@pytest.mark.parametrize("args, parts", MESSAGES, ids=[" ".join(a)[:40] for a, _ in MESSAGES])
def test_error_line_names_option_value_and_what_is_allowed(args, parts, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main([*args, "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "1"])
    except SystemExit as exit_info:
        code = exit_info.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_BAD_CONFIG and len(lines) == 1, lines
    assert all(part in lines[0] for part in parts), lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU, so asking for one is no error")
def test_an_accelerator_the_machine_lacks_is_one_line(tmp_path, capsys):
    code = main(["--trainer.accelerator", "gpu", "--trainer.default_root_dir", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_BAD_CONFIG and len(lines) == 1 and "accelerator='gpu'" in lines[0], lines
    assert not (tmp_path / "lightning_logs").exists()


def test_short_class_names_of_the_suite_resolve():
    config = resolved_config("--data", "MNIST", "--model.net", "SmallConvNet", "--trainer.callbacks+=KernelDrift")
    assert config["data"]["class_path"] == "datamodules.vision.MNIST"
    assert config["model"]["init_args"]["net"]["class_path"] == "lightning_modules.nets.cnn.SmallConvNet"
    assert config["trainer"]["callbacks"][-1]["class_path"] == "callbacks.kernel.KernelDrift"


@pytest.mark.parametrize(
    "phase, args",
    [
        ("parse", ["--model.lrr", "0.1"]),
        ("instantiation", ["--data.n_train", "-5"]),
        ("fit", ["--data", "TeacherStudent", "--model.loss", "hinge"]),
    ],
)
def test_train_script_errors_are_one_stderr_line_with_exit_2_and_no_log_folder(phase, args, tmp_path):
    """As a user meets them: a separate process, everything on stderr counted (Lightning's own
    notices included), for a fault found while parsing, while building the objects, and one that
    needs the module and the data together."""
    result = subprocess.run([*TRAIN, *args, "--trainer.default_root_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == EXIT_BAD_CONFIG and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert not list(tmp_path.iterdir())
