"""Model architectures of the built-in tasks.

The four MLPerf Tiny reference models are built layer for layer as in the MLPerf Tiny
reference (mlcommons/tiny); parameter counts after BatchNorm folding match its table
(DS-CNN 22,604; MobileNetV1-0.25 210,850; ResNet-8 77,706; FC autoencoder 265,864).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, k, stride=1, padding=0, groups: int = 1, dim: int = 2) -> list[nn.Module]:
    conv = nn.Conv2d if dim == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    return [conv(cin, cout, k, stride=stride, padding=padding, groups=groups), bn(cout), nn.ReLU()]


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 handwritten digits (1x8x8 -> 10)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, 16, 3, padding=1),
            *conv_bn_relu(16, 32, 3, padding=1),
            nn.MaxPool2d(2),
            *conv_bn_relu(32, 32, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class MNIST1DCNN(nn.Module):
    """A 1D CNN for MNIST-1D signals (1x40 -> 10)."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, width, 5, padding=2, dim=1),
            *conv_bn_relu(width, width, 3, stride=2, padding=1, dim=1),
            *conv_bn_relu(width, width, 3, stride=2, padding=1, dim=1),
        )
        self.classifier = nn.Linear(width * 10, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting DS-CNN: 49x10 MFCC -> 12 classes."""

    def __init__(self, num_classes: int = 12, width: int = 64):
        super().__init__()
        # TF 'same' padding for a 10x4 kernel at stride 2 on 49x10: pad rows 4/5, cols 1/1.
        self.stem = nn.Sequential(nn.ZeroPad2d((1, 1, 4, 5)), *conv_bn_relu(1, width, (10, 4), stride=2))
        blocks = []
        for _ in range(4):
            blocks += conv_bn_relu(width, width, 3, padding=1, groups=width)  # depthwise 3x3
            blocks += conv_bn_relu(width, width, 1)  # pointwise 1x1
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


class MobileNetV1(nn.Module):
    """MLPerf Tiny visual wake words MobileNetV1 (alpha 0.25): 96x96x3 -> 2 classes."""

    POINTWISE = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1)]

    def __init__(self, num_classes: int = 2):
        super().__init__()
        layers = conv_bn_relu(3, 8, 3, stride=2, padding=1)
        cin = 8
        for cout, stride in self.POINTWISE:
            layers += conv_bn_relu(cin, cin, 3, stride=stride, padding=1, groups=cin)
            layers += conv_bn_relu(cin, cout, 1)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ResidualStack(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(y + skip)


class ResNet8(nn.Module):
    """MLPerf Tiny image classification ResNet-8: 32x32x3 -> 10 classes, with residual adds."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, 16, 3, padding=1))
        self.stack1 = ResidualStack(16, 16, 1)
        self.stack2 = ResidualStack(16, 32, 2)
        self.stack3 = ResidualStack(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


class FCAutoencoder(nn.Module):
    """MLPerf Tiny anomaly detection autoencoder: 640 -> 128x4 -> 8 -> 128x4 -> 640."""

    def __init__(self, dim: int = 640, hidden: int = 128, bottleneck: int = 8):
        super().__init__()
        widths = [dim, hidden, hidden, hidden, hidden, bottleneck, hidden, hidden, hidden, hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def count_params(model: nn.Module, fold_bn: bool = True) -> int:
    """Parameters, counting BatchNorm as folded into the preceding layer when ``fold_bn``."""
    total = 0
    for m in model.modules():
        if fold_bn and isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one Conv / Linear call for one sample, given its (batched) output."""
    value = output.value if hasattr(output, "value") else output
    per_output = module.weight[0].numel() if isinstance(module, (nn.Conv1d, nn.Conv2d)) else module.in_features  # (cin / groups) x kernel
    return int(value[0].numel() * per_output)


def count_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per Conv / Linear layer for one sample, from a forward pass."""
    macs: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            def hook(mod, inp, out, name=name):
                macs[name] = layer_macs(mod, out)

            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs


def module_calls(model: nn.Module, example_input: torch.Tensor, names) -> dict[str, int]:
    """How many times one forward pass on ``example_input`` calls each named module, in the order
    of their first calls (modules never called are left out)."""
    calls: dict[str, int] = {}

    def counter(name):
        def hook(module, args):
            calls[name] = calls.get(name, 0) + 1  # returns None: a pre-hook's value would replace the input

        return hook

    run_with_hooks(model, example_input, [model.get_submodule(n).register_forward_pre_hook(counter(n)) for n in names])
    return calls


def run_with_hooks(model: nn.Module, example_input: torch.Tensor, hooks: list) -> None:
    """One no-grad forward pass on ``example_input``; the hook handles are removed afterwards, whatever happens."""
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
