import os
import warnings

import pytest
import torch

import workbench as wb

warnings.filterwarnings("ignore", category=wb.core.UnsupportedLayerWarning)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Baselines trained by tests go to a per-session cache, never the user's."""
    old = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = str(tmp_path_factory.mktemp("wb-cache"))
    torch.manual_seed(0)
    yield
    if old is None:
        os.environ.pop("WORKBENCH_CACHE", None)
    else:
        os.environ["WORKBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def digits():
    """The digits task and its trained float baseline (about 3 s to train)."""
    task = wb.create_task("digits-cnn")
    return task, wb.load_or_train_baseline(task, progress=False)


@pytest.fixture(scope="module")
def digits_small_sweep(digits):
    """digits on 256/64/128 samples, its baseline, and a quantise-one sweep at 2-8 weight bits (no store); one per module."""
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

    task, model = digits
    task = task.small(256, 64, 128)
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), store=False, progress=False)
    return task, model, sens
