"""Composition stage: out-of-domain preservation, output layouts, depth frames and mesh export.

Everything here is a pure function (or, for the temporal mask filter, a small stateful class) on
batched tensors or frames, so the pipeline only wires it together.
"""
