"""Plain nested state dicts in TensorFlow's format: ``torch.save`` / ``torch.load`` without pickle.

:func:`save_state_dict` writes a nested structure of dicts, lists, tuples,
scalars, strings and tensors to a TensorFlow bundle ``prefix`` (``.index`` +
``.data-*``), and :func:`load_state_dict` gives the same structure back, with
the same container and value types. Nothing is pickled and nothing on disk is
executed or imported; every tensor is checksummed.

Layout. Each distinct tensor is one bundle entry whose key is its place in the
structure in TensorFlow's key grammar (``state_dict/fc.weight`` ->
``state_dict/fc..weight/.ATTRIBUTES/VARIABLE_VALUE``), so
``tf.train.list_variables`` and ``tf.train.load_checkpoint`` show readable
names. The structure itself is one ``DT_STRING`` scalar under
:data:`STRUCTURE_KEY`: JSON with a typed encoding that tells every type apart::

    null, true/false, 12, "text", [..]   None, bool, int, str, list (as JSON)
    {"float": "0x1.8p+1"}                 float, as float.hex (exact: inf, nan, -0.0)
    {"tuple": [..]}                       tuple
    {"dict": [[key, value], ..]}          dict, in order; keys are str or int
    {"odict": [[key, value], ..]}         collections.OrderedDict
    {"tensor": "<key>"}                   torch.Tensor (entry ``key``)
    {"parameter": "<key>", "requires_grad": true}   torch.nn.Parameter

A tensor object that appears twice is stored once and comes back as one
tensor in both places. Payloads are aligned to 64 bytes, so that
``load_state_dict(..., mmap=True)`` can map them in place.

Modules: :mod:`.spec` (constants), :mod:`.save` (the walk that gives the spec and
the keys), :mod:`.load` (the spec checked and decoded; ``into``), :mod:`.payloads`
(tensors read in one batch or mapped).

Speed. Saving walks the structure once, formatting keys from an escaped path
built on the way down, and hands host tensors to ``BundleWriter.add_many`` as
they are; loading collects the tensor keys while the JSON is parsed, locates
(and, for ``mmap=True``, verifies) all payloads in one
:meth:`BundleReader.payload_locations` call, and reads them in one
``read_many_into`` (or makes the mapped tensors with one ``split`` per shard
and dtype). Large tensors save and load at about the format layer's speed; for
tens of thousands of small ones the structure walk and the JSON cost as much
again (``benchmarks/README.md``). The cyclic GC is kept to new objects meanwhile
(:func:`torchckpt.format._io.gc_frozen`).
"""

from .load import load_state_dict
from .save import save_state_dict
from .spec import FORMAT_VERSION, MAX_DEPTH, STRUCTURE_KEY

__all__ = ["FORMAT_VERSION", "MAX_DEPTH", "STRUCTURE_KEY", "load_state_dict", "save_state_dict"]
