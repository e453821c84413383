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
