"""Quantisation and pruning on Brevitas: specs, number formats, options, quantize, attention, PTQ algorithms, QAT, pruning, describe and the cost model."""
