"""Artifacts: the exporter registry, the QCDQ / QONNX writers, verification against the simulation, the QONNX runner and the quantise-export-verify pipeline."""
