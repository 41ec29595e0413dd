"""Nothing is pickled, and restoring runs no code named by the file.

* An AST scan of the whole ``torchckpt`` package finds no pickle-family import
  and no call that could unpickle or evaluate (``torch.load``, ``np.load``,
  ``eval``, ``exec``, ``__import__``; ``importlib.import_module`` only in the
  package's lazy re-exports, on names from its own table, and for the torch model
  factory the user names on the ``torchckpt convert --model`` command line).
* Python state that *names* classes, modules or ``__reduce__`` is restored as
  plain data, without importing anything.
* Forged files - pickled python state, broken placeholders, a pickle where the
  index should be, a ``registered_saver`` naming a function - give a clean
  ``TorchckptError`` (or are ignored), never an unpickle, an import or a bare
  ``ValueError``/``IndexError``.
"""

from __future__ import annotations

import ast
import json
import pathlib
import pickle
import sys
from typing import Any

import numpy as np
import pytest
import torch

import torchckpt
from torchckpt import Checkpoint, CorruptCheckpointError, TorchckptError
from torchckpt.format import BundleReader, BundleWriter, DataType, from_numpy_dtype, protos

PACKAGE = pathlib.Path(torchckpt.__file__).parent
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "pickletools", "marshal", "shelve", "dill",
                     "cloudpickle", "joblib", "copyreg"}
# Where a module may be imported by name: never a name read from a checkpoint file.
IMPORTS_BY_NAME = {"torchckpt/__init__.py",  # lazy re-exports of its own table
                   "torchckpt/convert/export.py"}  # the user's `convert --model` factory
FORBIDDEN_CALLS = {"eval", "exec", "__import__", "torch.load", "np.load", "numpy.load",
                   "torch.save", "pickle.loads", "pickle.load"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan(path: pathlib.Path) -> list[str]:
    problems = []
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PACKAGE.parent)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                problems.append(f"{rel}:{node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            called = _dotted(node.func)
            if called in FORBIDDEN_CALLS:
                problems.append(f"{rel}:{node.lineno}: calls {called}")
            if called.endswith("import_module") and rel.as_posix() not in IMPORTS_BY_NAME:
                problems.append(f"{rel}:{node.lineno}: imports a module by name")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                problems.append(f"{rel}:{node.lineno}: passes allow_pickle")
        if isinstance(node, ast.FunctionDef) and node.name in ("__reduce__", "__reduce_ex__",
                                                               "__setstate__"):
            problems.append(f"{rel}:{node.lineno}: defines {node.name}")
    return problems


def test_no_pickle_anywhere_in_the_package() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in scan(f)]
    assert problems == []


class Recorder:
    """A user object opting in through state_dict()/load_state_dict()."""

    def __init__(self, state: Any = None) -> None:
        self.state = state
        self.loaded: Any = None

    def state_dict(self) -> Any:
        return self.state

    def load_state_dict(self, state: Any) -> None:
        self.loaded = state


def test_python_state_naming_code_is_just_data(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = {"__reduce__": ["os", "system", f"touch {marker}"],
            "__class__": "subprocess.Popen", "py/object": "os.system",
            "module": "antigravity", "__tensor__": "x", "__tuple__": [1],
            "nested": [{"__dict__": 5}, ("a", 1)], "t": torch.arange(3)}
    path = Checkpoint(obj=Recorder(evil)).save(str(tmp_path / "c"))

    Checkpoint(obj=Recorder()).restore(path)  # warm up every torchckpt import
    before = set(sys.modules)
    target = Recorder()
    Checkpoint(obj=target).restore(path).assert_consumed()
    assert set(sys.modules) == before and "antigravity" not in sys.modules
    assert not marker.exists()
    loaded = dict(target.loaded)
    assert torch.equal(loaded.pop("t"), torch.arange(3))
    assert loaded == {k: v for k, v in evil.items() if k != "t"}


def rewrite(src: str, dst: str, replace: dict[str, Any]) -> str:
    """Copy bundle ``src`` to ``dst`` with some keys' values replaced (bytes: a string)."""
    with BundleReader(src) as r:
        w = BundleWriter(dst, sync=False)
        for k in r.keys():
            key, e = k.decode(), r.entry(k)
            if key in replace and isinstance(replace[key], bytes):
                w.add_strings(key, [replace[key]], ())
            elif key in replace:
                a = np.ascontiguousarray(replace[key])
                w.add(key, a, from_numpy_dtype(a.dtype), a.shape)
            elif e.dtype == DataType.DT_STRING:
                w.add_strings(key, list(r.read_array(k).reshape(-1)), e.shape)
            else:
                w.add(key, np.ascontiguousarray(r.read_array(k)), e.dtype, e.shape)
        w.finish()
    return dst


class Touch:
    """Unpickling this creates a file: proof that something unpickled."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture()
def saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    path = Checkpoint(model=model, optimizer=opt, obj=Recorder({"a": 1})).save(
        str(tmp_path / "c"))
    return path


def fresh() -> Checkpoint:
    model = torch.nn.Linear(2, 2)
    return Checkpoint(model=model, optimizer=torch.optim.Adam(model.parameters()),
                      obj=Recorder())


@pytest.mark.parametrize("key, value, message", [
    ("obj/.ATTRIBUTES/py_state", "pickle", "not UTF-8 JSON"),
    ("optimizer/.ATTRIBUTES/py_state", "pickle", "not UTF-8 JSON"),
    ("obj/.ATTRIBUTES/py_state", b"{not json", "not JSON"),
    ("obj/.ATTRIBUTES/py_state", json.dumps({"__tensor__": 99}).encode(), "malformed"),
    ("obj/.ATTRIBUTES/py_state", json.dumps({"__tensor__": True}).encode(), "malformed"),
    ("obj/.ATTRIBUTES/py_state", json.dumps({"__dict__": [[{}, 1]]}).encode(), "malformed"),
    ("obj/.ATTRIBUTES/py_state", json.dumps({"__float__": 1}).encode(), "malformed"),
    ("obj/.ATTRIBUTES/py_state", b"[" * 100000 + b"]" * 100000, "JSON"),
    ("optimizer/.ATTRIBUTES/py_state", b"[1, 2]", "param_groups"),
    ("obj/.ATTRIBUTES/py_state", np.int64(3), "expected a scalar string"),
])
def test_forged_python_state_is_a_clean_error(tmp_path, saved, key, value, message) -> None:
    marker = tmp_path / "unpickled"
    if isinstance(value, str):
        value = pickle.dumps({"state": Touch(marker)})
    forged = rewrite(saved, str(tmp_path / "forged"), {key: value})
    with pytest.raises(CorruptCheckpointError, match=message) as err:
        fresh().restore(forged)
    assert err.value.key == key and err.value.path.endswith("forged.index")
    assert not marker.exists()


def test_pickle_in_place_of_the_files_is_a_clean_error(tmp_path, saved) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Touch(marker))
    index = pathlib.Path(saved + ".index")
    good = index.read_bytes()
    index.write_bytes(payload)
    with pytest.raises(CorruptCheckpointError):
        fresh().restore(saved)
    index.write_bytes(good)
    data = pathlib.Path(saved + ".data-00000-of-00001")
    data.write_bytes(payload + bytes(max(0, data.stat().st_size - len(payload))))
    with pytest.raises(TorchckptError):
        fresh().restore(saved)
    torch.save({"x": Touch(marker)}, str(tmp_path / "model.pt"))  # a torch pickle file
    with pytest.raises(TorchckptError):
        fresh().restore(str(tmp_path / "model.pt"))
    assert not marker.exists()


def test_registered_saver_name_is_never_looked_up(tmp_path, saved) -> None:
    with BundleReader(saved) as r:
        graph = protos.TrackableObjectGraph()
        graph.ParseFromString(r.read_array("_CHECKPOINTABLE_OBJECT_GRAPH").item())
    for node in graph.nodes:
        node.registered_saver.name = "os.system"
        node.registered_saver.object_name = "antigravity"
    forged = rewrite(saved, str(tmp_path / "forged"),
                     {"_CHECKPOINTABLE_OBJECT_GRAPH": protos.serialize(graph)})
    before = set(sys.modules)
    fresh().restore(forged).assert_consumed()
    assert "antigravity" not in set(sys.modules) - before
