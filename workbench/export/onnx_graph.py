"""Small helpers the ONNX graph rewrites share: look up constants, producers and readers of
tensors, replace and reorder nodes, drop what nothing reads, shorten tensor names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _producers(graph: onnx.GraphProto) -> dict:
    """``{tensor name: the node that writes it}``."""
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _replace_node(graph: onnx.GraphProto, old, new: list) -> None:
    """Put the nodes ``new`` where ``old`` was, in order (the graph stays topologically sorted)."""
    at = list(graph.node).index(old)
    graph.node.remove(old)
    for k, node in enumerate(new):
        graph.node.insert(at + k, node)


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (stable otherwise)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or an input nothing produces: leave the order as it was
            return
        pending = rest
    nodes = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers whose outputs nothing reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _short_names(graph: onnx.GraphProto):
    """A function giving each internal tensor name ``t0``, ``t1``, ... in the order first asked
    (graph inputs and outputs keep theirs; the same name always gets the same short one)."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    return short
