"""PTQ algorithms: each runs through quantize_task and shows its intended effect on a small model."""

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.tasks.evaluate import predict


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

    from workbench.core.ptq import act_equalization

    eq = act_equalization(copy.deepcopy(model), x[:128], alpha=0.5)
    with torch.no_grad():
        assert torch.allclose(eq(x), model(x), atol=1e-4)  # a float Mul in front keeps the function
    # the outlier channel's activation is divided down, its weights scaled up
    scale = eq.fc1.scale.weight.detach()
    assert 3 * float(scale[3]) < float(scale[torch.arange(16) != 3].median())
    assert torch.allclose(eq.fc1.layer.weight[:, 3], model.fc1.weight[:, 3] / scale[3], rtol=1e-4)
    assert wb.tasks.evaluate.evaluate(wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8), wb.PTQConfig(act_equalization=0.5)), task) > 0.9


def test_ptq_bad_input():
    with pytest.raises(wb.infra.SpecError, match="weight_rounding: expected one of nearest, gptq, gpfq, adaround; got 'adaquant'"):
        wb.PTQConfig(weight_rounding="adaquant")
    with pytest.raises(wb.infra.SpecError, match="rounding_layers applies to weight_rounding 'adaround'; got weight_rounding 'gptq'"):
        wb.PTQConfig(weight_rounding="gptq", rounding_layers=["stem.0"])
    with pytest.raises(wb.infra.SpecError, match="rounding_iters: expected a positive integer; got 0"):
        wb.PTQConfig(weight_rounding="adaround", rounding_iters=0)
    with pytest.raises(wb.infra.SpecError, match="act_equalization: expected an alpha in \\(0, 1\\) or None; got 1.5"):
        wb.PTQConfig(act_equalization=1.5)


def test_adaround_learns_rounding_that_lowers_the_output_error_and_exports_as_learned(resnet, tmp_path):
    task, model = resnet
    spec = wb.QuantSpec.uniform(3, 8)
    ptq = wb.PTQConfig(weight_rounding="adaround", rounding_iters=200)
    _, nearest = _errors(task, model, spec, wb.PTQConfig())
    _, learned = _errors(task, model, spec, ptq)
    assert learned < 0.5 * nearest, (nearest, learned)
    q = wb.quantize_task(task, model, spec, ptq)
    plain = wb.quantize_task(task, model, spec, wb.PTQConfig())
    # the rounding really changed: some integers moved by one step, none by more
    moved = [(q.get_submodule(n).quant_weight().int() - plain.get_submodule(n).quant_weight().int()).abs()
             for n in ("stem.0", "stack2.conv1", "classifier")]
    assert all(int(m.max()) == 1 for m in moved) and all(0 < float((m > 0).float().mean()) < 0.5 for m in moved)
    # the learned integers are what both exports compute (baked into an ordinary Brevitas model)
    from workbench.export.pipeline import export_and_verify

    result = export_and_verify(task, q, tmp_path, latency_runs=5, qonnx_samples=16)
    assert result["onnx_agreement"] >= 0.99 and result["qonnx_agreement"] == 1.0 and result["int_kernel_nodes"] >= 10
    again = wb.quantize_task(task, model, spec, ptq)  # seeded: the same integers, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(q.state_dict().values(), again.state_dict().values()))


def test_adaround_on_chosen_layers_only(resnet):
    task, model = resnet
    spec = wb.QuantSpec.uniform(3, 8)
    plain = wb.quantize_task(task, model, spec, wb.PTQConfig())
    q = wb.quantize_task(task, model, spec, wb.PTQConfig(weight_rounding="adaround", rounding_iters=50, rounding_layers=["stack3.*"]))
    for name in ("stem.0", "stack1.conv1", "classifier"):
        assert torch.equal(q.get_submodule(name).quant_weight().int(), plain.get_submodule(name).quant_weight().int())
    assert not torch.equal(q.get_submodule("stack3.conv1").quant_weight().int(), plain.get_submodule("stack3.conv1").quant_weight().int())


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.fc(torch.relu(self.fc(x))))


def test_adaround_refuses_layers_it_does_not_support(resnet):
    from workbench.core.ptq import learned_rounding

    task, model = resnet
    x = task.data.calib.x[:32]
    spec = wb.QuantSpec.uniform(4, 8, layers={"classifier": {"weight_bits": "float"}})
    q = wb.quantize_task(task, model, spec)
    with pytest.raises(wb.infra.SpecError, match="learned rounding on layer 'classifier' \\(QuantLinear\\): its weights are not quantised$"):
        learned_rounding(q, x, iters=5, layers=["classifier"])
    with pytest.raises(wb.infra.SpecError, match="learned rounding on layer 'stack1' \\(Module\\): it supports QuantConv1d, QuantConv2d, QuantLinear \\(a glob such as 'stack1.\\*'"):
        learned_rounding(q, x, iters=5, layers=["stack1"])
    with pytest.raises(wb.infra.SpecError, match="rounding_layers: 'head.*' matches no weight-quantised Conv or Linear layer"):
        learned_rounding(q, x, iters=5, layers=["head.*"])
    torch.manual_seed(0)
    shared = Shared().eval()
    xs = torch.randn(64, 8)
    qs = wb.quantize_model(shared, wb.QuantSpec.uniform(4, 8))
    wb.core.calibrate(qs, xs)
    with pytest.raises(wb.infra.SpecError, match="learned rounding on layer 'fc': it runs 2 times per forward \\(shared weights\\)"):
        learned_rounding(qs, xs, iters=5)
    learned_rounding(qs, xs, iters=5, layers=["head"])  # the unshared layer alone is fine
    import brevitas.nn as qnn

    from workbench.core.quantizers import weight_quantizer

    upsample = nn.Sequential(qnn.QuantConv2d(3, 4, 3, weight_quant=weight_quantizer(4, "per_channel", "float")),
                             qnn.QuantConvTranspose2d(4, 2, 2, stride=2, weight_quant=weight_quantizer(4, "per_channel", "float"))).eval()
    with pytest.raises(wb.infra.SpecError, match="learned rounding on layer '1' \\(QuantConvTranspose2d\\): it supports QuantConv1d, QuantConv2d, QuantLinear; "
                       "name the layers to round in rounding_layers"):
        learned_rounding(upsample, torch.randn(8, 3, 8, 8), iters=5)
    learned_rounding(upsample, torch.randn(8, 3, 8, 8), iters=5, layers=["0"])
