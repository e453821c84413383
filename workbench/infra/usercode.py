"""The user's own code, called with care: a metric, a model's ``forward``, a model or data factory.

Whatever it raises or returns wrongly becomes one line of :class:`~workbench.infra.errors.UserCodeError`
naming the function as ``module:qualname`` and what it returned or raised, never a traceback.
"""

from __future__ import annotations

import math
import numbers

from .errors import UserCodeError, WorkbenchError


def where(obj) -> str:
    """``module:qualname`` of a function, class or instance (its class)."""
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}:{getattr(target, '__qualname__', None) or getattr(target, '__name__', repr(target))}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def shown(value) -> str:
    """What a function returned, in a few words: its type, and its value or shape."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (str, bytes)):
        return f"a {type(value).__module__.split('.')[0]}.{type(value).__name__} of shape {tuple(shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"


def metric_number(value, fn) -> float:
    """The number a metric ``fn`` returned, as a float: a Python or NumPy number, or a tensor / array
    holding one number; anything else (a string, a bool, None, a tensor of many values) is a
    :class:`UserCodeError`."""
    number = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_":
        number = float(value)
    elif hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (str, bytes)):
        size = math.prod(tuple(value.shape))
        if size == 1 and "bool" not in str(value.dtype) and "complex" not in str(value.dtype):
            try:
                number = float(value.reshape(()) if hasattr(value, "reshape") else value)
            except (TypeError, ValueError, RuntimeError):
                number = None
    if number is None:
        why = "; expected one number (reduce it, e.g. float(x.mean()))" if getattr(value, "shape", ()) not in ((), None) else \
              "; expected a number (a float such as 0.93)"
        raise UserCodeError(f"metric {where(fn)} returned {shown(value)}{why}")
    return number


def call_metric(fn, *args) -> float:
    """``fn(*args)`` as one number, or a one-line :class:`UserCodeError`."""
    try:
        value = fn(*args)
    except WorkbenchError:
        raise
    except Exception as exc:
        raise UserCodeError(f"metric {where(fn)} raised {first_line(exc)}") from None
    return metric_number(value, fn)


def off_cpu(model) -> str | None:
    """Why ``model`` cannot run here (its weights are not on the CPU), or None."""
    import torch

    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if isinstance(t, torch.Tensor) and t.device.type != "cpu":
                what = ("the meta device (no values: load real weights, e.g. model.to_empty(device='cpu') then load_state_dict)"
                        if t.device.type == "meta" else f"the {t.device} device (move it with model.cpu())")
                return f"{kind} {name or '(model)'} is on {what}; expected every weight on the CPU"
    return None


def check_model(model, label: str | None = None) -> None:
    """A :class:`UserCodeError` unless every weight of ``model`` is on the CPU."""
    why = off_cpu(model)
    if why:
        raise UserCodeError(f"{label or 'model'} {where(model)}: {why}")


def forward_error(model, exc: BaseException, what: str = "") -> UserCodeError:
    """The one-line error of ``model``'s ``forward`` raising ``exc``."""
    why = off_cpu(model)
    if why:
        return UserCodeError(f"model {where(model)}: {why}")
    on = f" on {what}" if what else ""
    return UserCodeError(f"model {where(model)}: forward{on} raised {first_line(exc)}")
