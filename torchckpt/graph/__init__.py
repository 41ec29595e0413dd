"""Layer 1: TensorFlow's object graph, framework-neutral. Internal, no stability guarantee.

``keys`` (the checkpoint-key grammar), ``object_graph`` (the
``TrackableObjectGraph`` as records), ``traversal`` (deterministic
breadth-first numbering) and ``status`` (``RestoreStatus``/``MatchReport``).
Imports ``torchckpt.format`` and ``torchckpt.errors`` only, never torch.

Without this file the package is a namespace package, which setuptools'
``find_packages`` leaves out of a wheel.
"""
