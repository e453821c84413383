"""A model's inputs checked against the data before any work: a one-line error naming both shapes."""

from __future__ import annotations

import torch
from torch import nn

from ..infra.errors import CalibrationError, WorkbenchError


class LayerInputs:
    """Forward pre-hooks on a model's Conv / Linear layers recording the last one entered and its
    input, so that data which does not fit the model (3 channels for a 1-channel model, the wrong
    number of features) becomes a one-line :class:`CalibrationError` naming the expected and the
    received shapes instead of a torch traceback from deep inside the model."""

    def __init__(self, model: nn.Module):
        self.model, self.hooks, self.entered = model, [], []

    def __enter__(self):
        self.hooks.append(self.model.register_forward_pre_hook(lambda mod, args: self.entered.clear()))  # one record per batch
        for name, m in self.model.named_modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                self.hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: self._enter(name, mod, args)))
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def _enter(self, name, mod, args):
        a = getattr(args[0], "value", args[0]) if args else None  # a Brevitas QuantTensor carries its tensor in .value
        self.entered.append((name, mod, tuple(a.shape) if hasattr(a, "shape") else None, getattr(a, "dtype", None)))
        del self.entered[:-2]

    @classmethod
    def check(cls, model: nn.Module, x: torch.Tensor, what: str = "calibration data") -> None:
        """Run two samples of ``x`` through ``model`` (a float model: no state changes) and raise a
        one-line CalibrationError if they do not fit it; call it before a sweep's work."""
        seen = cls(model)
        try:
            with torch.no_grad(), seen:
                model.eval()(x[:2])
        except WorkbenchError:
            raise
        except Exception as exc:  # data that does not fit the model, or the model's own forward failing
            from ..infra.usercode import forward_error

            error = seen.explain(x[:2], exc, what, tuple(x.shape)) if isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError)) else None
            raise (error or forward_error(model, exc, f"2 samples of the {what}")) from None

    def explain(self, xb: torch.Tensor, exc: BaseException, what: str = "calibration data", full_shape: tuple | None = None) -> CalibrationError | None:
        """The CalibrationError ``exc`` (raised running the batch ``xb`` of data of ``full_shape``)
        stands for, or None if it is not about the data's shape or dtype."""
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        got = tuple(xb.shape)
        data = full_shape or got
        if self.entered:
            name, mod, shape, dtype = self.entered[-1]
            first = len(self.entered) == 1 and self._first(name) and shape == got
            label = f"layer {name or '(model)'} ({type(mod).__name__})"
            dims = ", ".join(str(d) for d in data[1:-1])
            if isinstance(mod, nn.modules.conv._ConvNd) and shape is not None and len(shape) >= 2 and shape[1] != mod.in_channels:
                if first:
                    rest = "".join(f", {d}" for d in data[2:])
                    return CalibrationError(f"{what} has shape {data}; the model expects (N, {mod.in_channels}{rest}): "
                                            f"its first {label} takes {mod.in_channels} input channel(s), got {data[1]}")
                return CalibrationError(f"{what} of shape {data} does not fit the model: {label} takes {mod.in_channels} input channel(s), "
                                        f"got {shape[1]} (its input has shape {shape})")
            if isinstance(mod, nn.Linear) and shape is not None and len(shape) >= 1 and shape[-1] != mod.in_features:
                if first:
                    return CalibrationError(f"{what} has shape {data}; the model expects (N, {dims + ', ' if dims else ''}{mod.in_features}): "
                                            f"its first {label} takes {mod.in_features} input features, got {data[-1]}")
                return CalibrationError(f"{what} of shape {data} does not fit the model: {label} takes {mod.in_features} input features, "
                                        f"got {shape[-1]} (its input has shape {shape})")
            weight = getattr(mod, "weight", None)
            if dtype is not None and weight is not None and dtype != weight.dtype and "type" in text.lower():
                return CalibrationError(f"{what} reaches {label} as {dtype}; it expects {weight.dtype} ({type(exc).__name__}: {text})")
        if any(k in text.lower() for k in ("shape", "size", "channels", "mat1 and mat2", "dimension")):
            return CalibrationError(f"{what} of shape {data} does not fit the model ({type(exc).__name__}: {text})")
        return None

    def _first(self, name: str) -> bool:
        """Whether ``name`` is the first Conv / Linear layer of the model (in module order)."""
        for n, m in self.model.named_modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                return n == name
        return False
