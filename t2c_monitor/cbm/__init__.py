"""Concept bottleneck models: a sparse linear head on concept similarities (``t2c cbm``)."""
