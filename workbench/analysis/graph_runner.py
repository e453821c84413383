"""Run an fx graph from any layer onward.

``GraphRunner`` walks a traced model node by node, keeping only the values still needed
("live") after each step. Stopping in front of a layer gives exactly the tensors the rest of the
network reads, so a case that changes only that layer (and what comes after) reruns only the
suffix, from cached inputs, with the same result as a full forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _map_args(args, env):
    if isinstance(args, (tuple, list)):
        return type(args)(_map_args(a, env) for a in args)
    if isinstance(args, dict):
        return {k: _map_args(v, env) for k, v in args.items()}
    if hasattr(args, "op") and hasattr(args, "all_input_nodes"):
        return env[args.name]
    return args


class GraphRunner:
    """Incremental execution of a (Brevitas-backport or torch) fx GraphModule on one input batch."""

    def __init__(self, gm: nn.Module):
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        # the last position at which each node's value is read
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                last_use[a.name] = i
        self.last_use = last_use
        self.module_calls: dict[str, int] = {}
        for n in self.nodes:
            if n.op == "call_module":
                self.module_calls[n.target] = self.module_calls.get(n.target, 0) + 1

    def node_of(self, module_name: str):
        hits = [n for n in self.nodes if n.op == "call_module" and n.target == module_name]
        return hits[0] if len(hits) == 1 else None

    def can_cut_at(self, module_name: str) -> bool:
        """A layer called exactly once can be cut at; a shared (reused) module cannot."""
        return self.module_calls.get(module_name) == 1

    def _run_node(self, n, env: dict, overrides: dict[str, nn.Module]):
        args = _map_args(n.args, env)
        kwargs = _map_args(n.kwargs, env)
        if n.op == "call_module":
            mod = overrides.get(n.target) or self.gm.get_submodule(n.target)
            return mod(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "get_attr":
            obj: Any = self.gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            return obj
        raise RuntimeError(f"cannot run node {n.name} ({n.op})")

    def start(self, x: torch.Tensor) -> dict:
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise RuntimeError("GraphRunner supports models with exactly one input")
        return {"__pos__": 0, placeholders[0].name: x}

    def advance(self, env: dict, stop: int) -> dict:
        """Run nodes up to (not including) position ``stop``; drop values nothing after it reads."""
        pos = env["__pos__"]
        with torch.no_grad():
            for i in range(pos, stop):
                n = self.nodes[i]
                if n.op in ("placeholder", "output"):
                    continue
                env[n.name] = self._run_node(n, env, {})
        env["__pos__"] = stop
        for name in [k for k in env if k != "__pos__" and self.last_use.get(k, -1) < stop]:
            del env[name]
        return env

    def run_from(self, env: dict, overrides: dict[str, nn.Module] | None = None) -> torch.Tensor:
        """Run the rest of the graph from ``env`` (left unchanged) with some modules replaced."""
        overrides = overrides or {}
        local = dict(env)
        with torch.no_grad():
            for i in range(env["__pos__"], len(self.nodes)):
                n = self.nodes[i]
                if n.op == "placeholder":
                    continue
                if n.op == "output":
                    out = _map_args(n.args[0], local)
                    return out.value if hasattr(out, "value") else out
                local[n.name] = self._run_node(n, local, overrides)
                for a in n.all_input_nodes:  # free what nothing after this node reads: memory is reused, not grown
                    if self.last_use.get(a.name) == i:
                        local.pop(a.name, None)
        raise RuntimeError("graph has no output node")
