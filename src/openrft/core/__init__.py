"""Layer 0: what every other package builds on and nothing here imports from openrft.

:mod:`openrft.core.rundir`: run-directory primitives (atomic writes, resumable JSONL stores, stage manifests,
fingerprints of every input).
"""
