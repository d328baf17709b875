"""Snapshot to samples to exposition bytes: counters, samples, the renderer."""
