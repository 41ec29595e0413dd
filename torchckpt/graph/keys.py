"""The checkpoint-key grammar of TF2 object-based checkpoints.

Mirrors ``tensorflow/python/trackable/trackable_utils.py`` and
``constants.py``; unlike TF it has the inverse of every function.

* A local name is escaped by replacing ``.`` with ``..`` and then ``/`` with
  ``.S``, so ``/`` can join path components unambiguously.
* An object's path is the escaped local names of its first BFS path joined by
  ``/`` (empty for the root).
* An attribute key is ``<object path>/.ATTRIBUTES/<escaped attribute name>``;
  the root's attributes therefore start with ``/``.
* A slot variable's object path is
  ``<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<escaped slot name>``.
"""

from __future__ import annotations

OBJECT_GRAPH_PROTO_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # constants.py
VARIABLE_VALUE_KEY = "VARIABLE_VALUE"  # constants.py
OBJECT_ATTRIBUTES_NAME = ".ATTRIBUTES"  # constants.py
OPTIMIZER_SLOT_NAME = ".OPTIMIZER_SLOT"  # trackable_utils._OPTIMIZER_SLOTS_NAME
PY_STATE_KEY = "py_state"  # python_state.PYTHON_STATE
SAVE_COUNTER = "save_counter"  # checkpoint.py

_ESCAPE_CHAR = "."  # trackable_utils._ESCAPE_CHAR


def escape_local_name(name: str) -> str:
    """``trackable_utils.escape_local_name``: ``.`` -> ``..``, then ``/`` -> ``.S``."""
    return name.replace(_ESCAPE_CHAR, _ESCAPE_CHAR * 2).replace("/", _ESCAPE_CHAR + "S")


def object_path(local_names: list[str] | tuple[str, ...]) -> str:
    """Path of an object from the local names of its BFS path."""
    return "/".join(escape_local_name(n) for n in local_names)


def format_key(path: str, attribute: str = VARIABLE_VALUE_KEY) -> str:
    """The checkpoint key of ``attribute`` of the object at ``path``."""
    return f"{path}/{OBJECT_ATTRIBUTES_NAME}/{escape_local_name(attribute)}"


def slot_path(variable_path: str, optimizer_path: str, slot_name: str) -> str:
    """Object path of a slot variable (``trackable_utils.slot_variable_key`` without the suffix)."""
    return (f"{variable_path}/{OPTIMIZER_SLOT_NAME}/{optimizer_path}/"
            f"{escape_local_name(slot_name)}")
