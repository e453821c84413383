"""Registries filled by the modules that define their entries.

A registry never imports its entries. The workbench's own entries and a user's package name their
modules under an entry-point group in their ``pyproject.toml``::

    [project.entry-points."workbench.exporters"]
    my-npu = "my_package.npu_target"

The first read of the registry imports each named module once (sorted by name, so the order is the
same on every machine); importing it registers its entries. A module of another package that fails
to import is a :class:`PluginWarning` naming it, and the registry goes on without it; one of the
workbench's own is an error, since the installation is broken.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points


class PluginWarning(UserWarning):
    """A module named under a workbench entry-point group could not be imported."""


class PluginRegistry(dict):
    """A ``name -> entry`` dict that imports the modules of entry-point group ``group`` on its first read.

    Its order does not depend on which module was imported first: the entries of the module that
    defines the registry (``home``) come first, then those of each entry-point module (sorted by
    entry-point name), then everyone else's, each group in registration order."""

    def __init__(self, group: str, home: str | None = None):
        super().__init__()
        self.group = group
        self.home = home
        self._loaded = False
        self._modules: list[str] | None = None
        self._order: dict = {}
        self._seq = 0

    def _entry_points(self) -> list:
        return sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value))

    def _rank(self, value) -> int:
        module = getattr(value, "__module__", None) or type(value).__module__
        if module == self.home:
            return 0
        if self._modules is None:
            self._modules = [ep.value.split(":")[0] for ep in self._entry_points()]
        for i, name in enumerate(self._modules):
            if module == name or module.startswith(name + "."):
                return 1 + i
        return 1 + len(self._modules)

    def __setitem__(self, key, value):
        if not dict.__contains__(self, key):
            self._order[key] = (self._rank(value), self._seq)
            self._seq += 1
        super().__setitem__(key, value)

    def _sorted(self) -> list:
        return sorted(dict.keys(self), key=lambda k: self._order.get(k, (1 << 30, 0)))

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules register into this dict while they load
        found = self._entry_points()
        if not any(ep.value.split(".")[0] == "workbench" for ep in found):
            warnings.warn(f"{self.group}: the workbench's own entry points are not installed, so its built-in entries are missing; "
                          "expected an installed workbench (pip install -e . or make install, again after pyproject.toml changes)",
                          PluginWarning, stacklevel=2)
        for ep in found:
            try:
                ep.load()
            except Exception as exc:
                if ep.value.split(".")[0] == "workbench":
                    raise
                warnings.warn(f"{self.group}: cannot import {ep.value!r} ({type(exc).__name__}: {exc}); its entries are not registered",
                              PluginWarning, stacklevel=2)

    def __getitem__(self, key):
        self.load()
        return super().__getitem__(key)

    def __contains__(self, key):
        self.load()
        return super().__contains__(key)

    def __iter__(self):
        self.load()
        return iter(self._sorted())

    def __len__(self):
        self.load()
        return super().__len__()

    def __repr__(self):
        self.load()
        return repr({k: dict.__getitem__(self, k) for k in self._sorted()})

    def get(self, key, default=None):
        self.load()
        return super().get(key, default)

    def keys(self):
        self.load()
        return self._sorted()

    def values(self):
        self.load()
        return [dict.__getitem__(self, k) for k in self._sorted()]

    def items(self):
        self.load()
        return [(k, dict.__getitem__(self, k)) for k in self._sorted()]
