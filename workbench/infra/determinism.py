"""The torch thread count under which the workbench trains, fine-tunes and builds.

Floating-point reductions split across a different number of threads sum in a different order,
so the same recipe trained with 1 and with 2 threads gives different weights and different ONNX
bytes. The workbench therefore fixes the count itself: ``$WORKBENCH_THREADS`` when set (an
integer >= 1), else 1, whatever ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` the caller has.
The count is part of the baseline cache fingerprint and is recorded in ``summary.json``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import SpecError

ENV = "WORKBENCH_THREADS"
DEFAULT_THREADS = 1


def training_threads() -> int:
    """The thread count builds run with: ``$WORKBENCH_THREADS`` or 1."""
    raw = os.environ.get(ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1 or n > 1024:
        raise SpecError(f"{ENV}={raw[:40]!r}; expected an integer thread count in 1-1024")
    return n


@contextmanager
def fixed_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` (default :func:`training_threads`) torch intra-op threads, then
    restore the caller's count (also when the block raises).

    Also a decorator: ``@fixed_threads()`` reads :func:`training_threads` at each call, not at
    import, so ``$WORKBENCH_THREADS`` set later still applies."""
    n = training_threads() if n is None else n
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


MAX_SEED = 2**32 - 1  # what numpy's, torch's and Python's seeding all accept


def check_seed(seed, error: type = SpecError, label: str = "seed") -> int:
    """``seed`` when it is an integer in 0-2**32-1; else a one-line ``error`` naming ``label``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise error(f"{label} {seed!r}; expected an integer in 0-{MAX_SEED}")
    return seed


@contextmanager
def seeded(seed: int) -> Iterator[int]:
    """Run the block with Python's ``random``, numpy's global and torch's (CPU) generators seeded
    with ``seed``, then give the caller's generator states back (also when the block raises).

    What a user's task factory draws unseeded (``nn.Linear``'s initial weights, a shuffled split)
    is then the same in every process: the workbench calls every task factory (``module:function``
    on the command line, a recipe's ``task.factory``, a registered task) inside this block with the
    task's seed, so a recipe's ``seed`` fixes the weights its factory builds, not only the training."""
    import random

    import numpy as np

    check_seed(seed)
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield seed
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
