"""PTQ algorithms: each runs through quantize_task and shows its intended effect on a small model."""

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.evaluate import predict


@pytest.fixture(scope="module")
def resnet():
    task = wb.create_task("ic-resnet8").small(256, 128, 256)
    return task, wb.load_or_train_baseline(task, progress=False)


def _errors(task, model, spec, ptq):
    q = wb.quantize_task(task, model, spec, ptq)
    fp, out = predict(model, task.data.calib.x), predict(q, task.data.calib.x)
    return float((out - fp).mean(0).abs().mean()), float(((out - fp) ** 2).mean())


def test_bias_correction_lowers_the_mean_output_error(resnet):
    task, model = resnet
    spec = wb.QuantSpec.uniform(3, 8)
    plain, _ = _errors(task, model, spec, wb.PTQConfig())
    corrected, _ = _errors(task, model, spec, wb.PTQConfig(bias_correction=True))
    assert corrected < 0.5 * plain, (plain, corrected)


@pytest.mark.parametrize("rounding", ["gptq", "gpfq"])
def test_gptq_and_gpfq_rounding_lower_the_output_error(resnet, rounding):
    task, model = resnet
    spec = wb.QuantSpec.uniform(3, 8)
    _, nearest = _errors(task, model, spec, wb.PTQConfig())
    _, rounded = _errors(task, model, spec, wb.PTQConfig(weight_rounding=rounding))
    assert rounded < 0.8 * nearest, (nearest, rounded)


class Outliers(nn.Module):
    """Two Linear layers; one input channel is 50x larger than the others (an activation outlier)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)
        self.register_buffer("gain", torch.ones(16))
        self.gain[3] = 50.0

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.gain)))


def test_act_equalization_keeps_the_function_and_runs_in_the_pipeline():
    torch.manual_seed(0)
    model = Outliers().eval()
    x = torch.randn(256, 16)
    task = wb.make_task(model, x[:128], (x[128:], model(x[128:]).argmax(1)), metric=lambda o, t: float((o.argmax(1) == t).float().mean()))
    import copy

    from workbench.ptq import act_equalization

    eq = act_equalization(copy.deepcopy(model), x[:128], alpha=0.5)
    with torch.no_grad():
        assert torch.allclose(eq(x), model(x), atol=1e-4)  # a float Mul in front keeps the function
    # the outlier channel's activation is divided down, its weights scaled up
    scale = eq.fc1.scale.weight.detach()
    assert 3 * float(scale[3]) < float(scale[torch.arange(16) != 3].median())
    assert torch.allclose(eq.fc1.layer.weight[:, 3], model.fc1.weight[:, 3] / scale[3], rtol=1e-4)
    assert wb.evaluate(wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8), wb.PTQConfig(act_equalization=0.5)), task) > 0.9


def test_ptq_bad_input():
    with pytest.raises(wb.SpecError, match="weight_rounding 'adaround'; expected one of nearest, gptq, gpfq"):
        wb.PTQConfig(weight_rounding="adaround")
    with pytest.raises(wb.SpecError, match="act_equalization: expected an alpha in \\(0, 1\\) or None; got 1.5"):
        wb.PTQConfig(act_equalization=1.5)
