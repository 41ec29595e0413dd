"""The ``checkpoint`` state file: which prefixes exist in a directory and which is newest.

Mirrors ``tensorflow/python/checkpoint/checkpoint_management.py`` and
``python/training/checkpoint_state.proto``. The file is a ``CheckpointState``
in protobuf *text* format::

    model_checkpoint_path: "ckpt-4"
    all_model_checkpoint_paths: "ckpt-3"
    all_model_checkpoint_paths: "ckpt-4"
    all_model_checkpoint_timestamps: 1795676965.6201236
    all_model_checkpoint_timestamps: 1795676965.679651
    last_preserved_timestamp: 1795676964.5503864

TF2 writes paths relative to the directory (so a moved directory still works);
TF1's Saver writes absolute ones. On read, relative paths are joined to the
directory that holds the file. Writes go to ``checkpoint.tmp<hex>`` then
``os.replace`` (TF's ``atomic_write_string_to_file``).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field

from google.protobuf import text_format

from ..errors import CorruptCheckpointError
from . import protos
from .naming import index_path

STATE_FILENAME = "checkpoint"


@dataclass(frozen=True)
class CheckpointState:
    """A parsed state file; paths are as stored (possibly relative)."""

    model_checkpoint_path: str
    all_model_checkpoint_paths: list[str] = field(default_factory=list)
    all_model_checkpoint_timestamps: list[float] = field(default_factory=list)
    last_preserved_timestamp: float = 0.0

    def resolved(self, directory: str) -> "CheckpointState":
        """A copy whose relative paths are joined to ``directory``."""
        def fix(p: str) -> str:
            return p if os.path.isabs(p) else os.path.join(directory, p)
        return CheckpointState(fix(self.model_checkpoint_path),
                               [fix(p) for p in self.all_model_checkpoint_paths],
                               list(self.all_model_checkpoint_timestamps),
                               self.last_preserved_timestamp)


def render_state(state: CheckpointState) -> str:
    """The text TF writes for ``state`` (``text_format.MessageToString``)."""
    msg = protos.CheckpointState(
        model_checkpoint_path=state.model_checkpoint_path,
        all_model_checkpoint_paths=state.all_model_checkpoint_paths,
        all_model_checkpoint_timestamps=state.all_model_checkpoint_timestamps,
        last_preserved_timestamp=state.last_preserved_timestamp)
    return protos.to_text(msg)


def parse_state(text: str, path: str = STATE_FILENAME) -> CheckpointState:
    """Parse state-file text.

    Raises:
        CorruptCheckpointError: unparseable text, or an empty ``model_checkpoint_path``.
    """
    msg = protos.CheckpointState()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise CorruptCheckpointError(path, f"unparseable checkpoint state file: {exc}") from exc
    if not msg.model_checkpoint_path:
        raise CorruptCheckpointError(path, "invalid checkpoint state: model_checkpoint_path is empty")
    return CheckpointState(msg.model_checkpoint_path, list(msg.all_model_checkpoint_paths),
                           list(msg.all_model_checkpoint_timestamps),
                           msg.last_preserved_timestamp)


def read_state(directory: str, latest_filename: str = STATE_FILENAME) -> CheckpointState | None:
    """The directory's state with resolved paths, or None when there is no state file."""
    path = os.path.join(directory, latest_filename)
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 24)  # a state file is small; never read an unbounded file
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(path, "checkpoint state file is not UTF-8 text") from exc
    return parse_state(text, path).resolved(directory)


def _relative(directory: str, path: str) -> str:
    if not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path, directory)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith(os.pardir) else rel


def write_state(directory: str, model_checkpoint_path: str,
                all_model_checkpoint_paths: list[str] | None = None, *,
                timestamps: list[float] | None = None, last_preserved_timestamp: float = 0.0,
                latest_filename: str = STATE_FILENAME, sync: bool = True) -> None:
    """Atomically (re)write the state file with paths relative to ``directory``."""
    paths = list(all_model_checkpoint_paths or [])
    if not paths or paths[-1] != model_checkpoint_path:
        paths = [p for p in paths if p != model_checkpoint_path] + [model_checkpoint_path]
    state = CheckpointState(_relative(directory, model_checkpoint_path),
                            [_relative(directory, p) for p in paths],
                            list(timestamps or []), last_preserved_timestamp)
    os.makedirs(directory or ".", exist_ok=True)
    final = os.path.join(directory, latest_filename)
    tmp = f"{final}.tmp{secrets.token_hex(16)}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(render_state(state))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def state_temp_files(directory: str, latest_filename: str = STATE_FILENAME) -> list[str]:
    """Temporary state files an interrupted :func:`write_state` (or TF's
    ``atomic_write_string_to_file``: ``.tmp`` + 32 hex digits) left in ``directory``."""
    pattern = re.compile(re.escape(latest_filename) + r"\.tmp[0-9a-f]{32}")
    try:
        names = os.listdir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.join(directory, n) for n in names if pattern.fullmatch(n))


def latest_checkpoint(directory: str, latest_filename: str = STATE_FILENAME) -> str | None:
    """``tf.train.latest_checkpoint``: the newest prefix whose ``.index`` exists, else None.

    A prefix named by the state file that lies outside ``directory`` is still
    returned when it exists (TF1 Saver writes absolute paths); a dangling one
    yields None.
    """
    state = read_state(directory, latest_filename)
    if state is None:
        return None
    prefix = state.model_checkpoint_path
    return prefix if os.path.isfile(index_path(prefix)) else None
