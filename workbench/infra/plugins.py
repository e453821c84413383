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
    """A ``name -> entry`` dict that imports the modules of entry-point group ``group`` on its first read."""

    def __init__(self, group: str):
        super().__init__()
        self.group = group
        self._loaded = False

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules register into this dict while they load
        for ep in sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value)):
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
        return super().__iter__()

    def __len__(self):
        self.load()
        return super().__len__()

    def __repr__(self):
        self.load()
        return super().__repr__()

    def get(self, key, default=None):
        self.load()
        return super().get(key, default)

    def keys(self):
        self.load()
        return super().keys()

    def values(self):
        self.load()
        return super().values()

    def items(self):
        self.load()
        return super().items()
