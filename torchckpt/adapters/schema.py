"""Checking Python state read from a file against the live value it will replace.

Every Python value a restore hands to an owner (a number attribute, an
optimizer's hyperparameters, a scheduler's, a ``GradScaler``'s, a loader's or
the RNGs' state) passes through here before anything is set, so that a forged
or mismatched value is refused with an :class:`~torchckpt.errors.InvalidValueError`
naming the field, and the owner keeps its values.

The live value is the schema (:func:`conform`):

===============  =================================================================
live value       accepted from the file
===============  =================================================================
``bool``         a bool
``int``          an int in int64 (not a bool, not a float); with ``real_ints``
                 (hyperparameters, where ``weight_decay=0`` is a real) also a float
``float``        an int or a float, finite unless the schema allows otherwise
``str``          a str
tensor           a tensor of the same dtype and shape
list, tuple      a list or tuple of the same length, item by item; a tuple stays one
dict             a dict; shared keys item by item, new keys as plain data
``None``         plain data: JSON values and tensors, floats finite, ints in int64
===============  =================================================================

Owners add rules by key name (``Schema.fields``): a learning rate is a finite
number >= 0 whatever the live value's type, ``last_epoch`` an int >= -1, a
mode one of its names. A rule applies to the key wherever it occurs in the
state. The layer imports only torch and the errors.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Callable, Mapping, NoReturn

import torch

from ..errors import InvalidValueError

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

#: ``rule(found, live, field, schema) -> value to land``; ``live`` is None where the
#: live state has no such key.
Rule = Callable[[Any, Any, str, "Schema"], Any]


@dataclass(frozen=True)
class Schema:
    """How an owner's state from a file is compared with its live state.

    Attributes:
        fields: rules by key name, used instead of the live value's type.
        real_ints: a live int accepts a float too (numbers that are reals by nature).
        finite: floats must be finite (else inf is taken; NaN never is).
        none_matches: a None from the file is accepted for any live value (state
            whose fields come and go with progress, like a torchdata loader's).
        magnitude: a bound on the absolute value of reals compared with a live number
            (hyperparameters that torch passes to float32 kernels).
    """

    fields: Mapping[str, Rule] = dataclass_field(default_factory=dict)
    real_ints: bool = False
    finite: bool = True
    none_matches: bool = False
    magnitude: float | None = None


def check_state(found: Any, live: Any, schema: Schema, field: str = "") -> Any:
    """``found`` conformed to ``live`` (:func:`conform`), the entry point for a whole state.

    Raises:
        InvalidValueError: a value the live state does not accept, or state nested so
            deeply that checking it would exhaust the stack.
    """
    try:
        return conform(found, live, field, schema)
    except RecursionError as exc:
        raise InvalidValueError("state nested too deeply", field=field or None) from exc


def conform(found: Any, live: Any, field: str, schema: Schema) -> Any:
    """The value to land for ``found`` in place of ``live`` (see the module table).

    Raises:
        InvalidValueError: ``found`` is not of ``live``'s type, or out of range.
    """
    if found is None and schema.none_matches:
        return None
    if live is None:
        return plain(found, field, schema)
    if isinstance(live, bool):
        return as_bool(found, field)
    if isinstance(live, int) and not schema.real_ints:
        return as_int(found, field)
    if isinstance(live, (int, float)):
        bound = schema.magnitude
        return as_real(found, field, finite=schema.finite, lo=None if bound is None else -bound,
                       hi=bound)
    if isinstance(live, str):
        return as_str(found, field)
    if isinstance(live, torch.Tensor):
        return as_tensor(found, field, dtype=live.dtype, shape=tuple(live.shape))
    if isinstance(live, (list, tuple)):
        return _sequence(found, live, field, schema)
    if isinstance(live, dict):
        return _mapping(found, live, field, schema)
    refuse(field, f"a {type(live).__name__}", found)  # nothing a file can hold


def plain(found: Any, field: str, schema: Schema) -> Any:
    """Data with no live counterpart: JSON values and tensors (ints in int64, floats
    finite unless ``schema.finite`` is off), with ``schema.fields`` rules applied."""
    if found is None or isinstance(found, (bool, str, torch.Tensor)):
        return found
    if isinstance(found, int):
        return as_int(found, field)
    if isinstance(found, float):
        return as_real(found, field, finite=schema.finite)
    if isinstance(found, (list, tuple)):
        out = [plain(x, _index(field, i), schema) for i, x in enumerate(found)]
        return tuple(out) if isinstance(found, tuple) else out
    if isinstance(found, dict):
        return {k: _item(v, None, _join(field, k), schema, k) for k, v in found.items()}
    refuse(field, "plain data", found)


def _item(found: Any, live: Any, field: str, schema: Schema, name: Any) -> Any:
    rule = schema.fields.get(name) if isinstance(name, str) else None
    return rule(found, live, field, schema) if rule is not None \
        else conform(found, live, field, schema)


def _mapping(found: Any, live: dict[Any, Any], field: str, schema: Schema) -> Any:
    if not isinstance(found, dict):
        refuse(field, "a dict", found)
    out = {k: _item(v, live.get(k), _join(field, k), schema, k) for k, v in found.items()}
    if type(live) in (Counter, OrderedDict):  # JSON brings plain dicts; keep the live kind
        return type(live)(out)
    return out


def _sequence(found: Any, live: list[Any] | tuple[Any, ...], field: str,
              schema: Schema) -> Any:
    if not isinstance(found, (list, tuple)) or len(found) != len(live):
        refuse(field, f"a {type(live).__name__} of {len(live)} items", found)
    out = [conform(f, x, _index(field, i), schema) for i, (f, x) in enumerate(zip(found, live))]
    return tuple(out) if isinstance(live, tuple) else out


# --- checks of single values ---------------------------------------------------------------

def as_bool(found: Any, field: str) -> bool:
    if not isinstance(found, bool):
        refuse(field, "a bool", found)
    return found


def as_int(found: Any, field: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """An int (not a bool) in ``[lo, hi]``."""
    if type(found) is not int or not lo <= found <= hi:
        refuse(field, _describe_int(lo, hi), found)
    return found


def as_real(found: Any, field: str, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False, finite: bool = True) -> int | float:
    """An int or a float (not a bool, never NaN), within the bounds given."""
    ok = type(found) in (int, float) and not (isinstance(found, float) and math.isnan(found))
    if ok and type(found) is int:
        ok = INT64_MIN <= found <= INT64_MAX
    if ok and finite:
        ok = math.isfinite(found)
    if ok and lo is not None:
        ok = found > lo if lo_open else found >= lo
    if ok and hi is not None:
        ok = found < hi if hi_open else found <= hi
    if not ok:
        refuse(field, _describe_real(lo, hi, lo_open, hi_open, finite), found)
    return found


def as_str(found: Any, field: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(found, str) or (choices is not None and found not in choices):
        refuse(field, "a string" if choices is None else f"one of {list(choices)}", found)
    return found


def as_tensor(found: Any, field: str, *, dtype: torch.dtype | None = None,
              shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A tensor of exactly ``dtype`` and ``shape`` (either None: any)."""
    if not isinstance(found, torch.Tensor) or (dtype is not None and found.dtype != dtype) \
            or (shape is not None and tuple(found.shape) != tuple(shape)):
        what = "a tensor" if dtype is None else f"{_a(_dtype_name(dtype))} tensor"
        refuse(field, what + ("" if shape is None else f" of shape {list(shape)}"), found)
    return found


def refuse(field: str, expected: str, found: Any) -> NoReturn:
    """Raise the :class:`InvalidValueError` for ``found`` at ``field``."""
    raise InvalidValueError(f"expected {expected}, found {describe(found)}", field=field or None)


def describe(v: Any) -> str:
    """A short description of a value for an error message (never the whole of it)."""
    if isinstance(v, torch.Tensor):
        return f"{_a(_dtype_name(v.dtype))} tensor of shape {list(v.shape)}"
    if isinstance(v, dict):
        return f"a dict with keys {_short(repr(sorted(map(str, v))))}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)} item{'' if len(v) == 1 else 's'}"
    if v is None or isinstance(v, (bool, int, float, complex, str)):
        return f"{type(v).__name__} {_short(repr(v))}" if v is not None else "None"
    return f"a {type(v).__name__}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in ("a", "e", "i", "o") else f"a {word}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _describe_int(lo: int, hi: int) -> str:
    if lo == hi:
        return f"the int {lo}"
    if hi == INT64_MAX:
        return "an int64" if lo == INT64_MIN else f"an int >= {lo} (an int64)"
    return f"an int in [{lo}, {hi}]"


def _describe_real(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool,
                   finite: bool) -> str:
    text = "a finite real number" if finite else "a real number (not NaN)"
    if lo is not None and hi is not None:
        return (f"{text} in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if hi_open else ']'}")
    if lo is not None:
        return f"{text} {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{text} {'<' if hi_open else '<='} {_num(hi)}"
    return text


def _num(x: float) -> str:
    return f"{x:.6g}"


def _join(field: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{field}.{key}" if field else key
    return f"{field}[{key!r}]"


def _index(field: str, i: int) -> str:
    return f"{field}[{i}]"


# --- rules by key name ---------------------------------------------------------------------

def counter(lo: int = 0, hi: int = INT64_MAX) -> Rule:
    """An int in ``[lo, hi]`` (a step or epoch counter), whatever the live value."""
    return lambda found, live, field, schema: as_int(found, field, lo, hi)


def real(**bounds: Any) -> Rule:
    """A real number within ``bounds`` (see :func:`as_real`); a 0-d or small tensor where
    the live value is a tensor (a learning rate given as a tensor), checked the same way."""
    def rule(found: Any, live: Any, field: str, schema: Schema) -> Any:
        if isinstance(live, torch.Tensor):
            t = as_tensor(found, field, shape=tuple(live.shape))
            if not t.is_floating_point():
                refuse(field, f"a floating tensor of shape {list(live.shape)}", t)
            for x in t.detach().to("cpu", torch.float64).reshape(-1).tolist():
                as_real(x, field, **bounds)
            return t
        return as_real(found, field, **bounds)
    return rule


def choice(*options: str | None) -> Rule:
    """One of ``options`` (None among them: may be None)."""
    names = tuple(o for o in options if o is not None)

    def rule(found: Any, live: Any, field: str, schema: Schema) -> Any:
        if found is None and None in options:
            return None
        return as_str(found, field, names)
    return rule


def each(element: Rule) -> Rule:
    """A list or tuple of the live one's length (any length where there is none), each
    item checked by ``element``; None items are kept where the live item is None."""
    def rule(found: Any, live: Any, field: str, schema: Schema) -> Any:
        if not isinstance(found, (list, tuple)):
            refuse(field, "a list", found)
        if isinstance(live, (list, tuple)) and len(found) != len(live):
            refuse(field, f"a {type(live).__name__} of {len(live)} items", found)
        lives = list(live) if isinstance(live, (list, tuple)) else [None] * len(found)
        out = [None if f is None and x is None else element(f, x, _index(field, i), schema)
               for i, (f, x) in enumerate(zip(found, lives))]
        return tuple(out) if isinstance(live, tuple) else out
    return rule


def scalar_or_each(element: Rule) -> Rule:
    """``element`` for a single value, :func:`each` of it for a list or tuple (Adafactor's
    ``eps`` is a pair where other optimizers have one number)."""
    many = each(element)

    def rule(found: Any, live: Any, field: str, schema: Schema) -> Any:
        sequence = isinstance(live if live is not None else found, (list, tuple))
        return (many if sequence else element)(found, live, field, schema)
    return rule


def generator_state(found: Any, field: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """A ``torch.Generator`` state for ``device``: a uint8 tensor of exactly the size such
    a generator's state has, which a scratch generator accepts (torch checks the
    Mersenne Twister's position fields); no live generator is touched."""
    scratch = torch.Generator(device=device)
    t = as_tensor(found, field, dtype=torch.uint8, shape=tuple(scratch.get_state().shape))
    try:
        scratch.set_state(t.detach().to("cpu").contiguous())
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidValueError(f"expected a valid {torch.device(device).type} generator state, "
                                f"found one torch refuses ({exc})", field=field or None) from exc
    return t
