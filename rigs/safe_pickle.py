"""A restricted unpickler for FLAME model files.

FLAME's ``.pkl`` files are Python pickles: the 2017-2020 files were written under Python 2 and hold
numpy arrays, ``scipy.sparse`` matrices and ``chumpy.ch.Ch`` objects; later files may be plain numpy
pickled under Python 3.  ``pickle.load`` on such a file would import and call whatever the file
names, so we never use it.  :class:`FlameUnpickler` resolves only an explicit allow-list of globals,
each to a small checked stand-in, and refuses everything else *before* anything is called:

* numpy array / dtype / scalar reconstruction (``numpy.core.multiarray._reconstruct``, ``scalar``,
  ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.numeric._frombuffer``; also the
  ``numpy._core.*`` spellings of numpy 2) -- wrapped so they only ever build plain arrays of
  numbers or strings; the pickled dtype and array *states* are checked (sizes must agree) and
  applied here, never by numpy's own ``__setstate__``, which trusts them (a damaged file would
  crash the interpreter);
* ``scipy.sparse`` CSC / CSR matrices and arrays under old and new module paths
  (``scipy.sparse.csc.csc_matrix``, ``scipy.sparse._csc.csc_matrix``, ...) -- read into a shim and
  rebuilt with the current scipy class from ``(data, indices, indptr, shape)``;
* ``chumpy.ch.Ch`` -- read into :class:`ChShim` (chumpy itself is neither needed nor imported);
  chumpy *operation* objects (``chumpy.reordering.*``, ``chumpy.ch_ops.*``, ...) become inert
  :class:`ChumpyExpression` placeholders and are refused (by :func:`safe_load`, or by the FLAME
  loader when it needs that key) with a request to re-export the model as plain arrays;
* the pickle-protocol helpers ``copy_reg._reconstructor`` / ``copyreg.__newobj__`` (only for the shim
  classes above), ``__builtin__.object``, ``set``/``frozenset``, ``collections.OrderedDict`` and
  ``_codecs.encode`` (only ``(str, "latin1")``, which is how Python 3 writes bytes at protocol <= 2).

Anything else -- ``os.system``, ``builtins.eval``, ``subprocess.Popen`` ... -- raises
:class:`ForbiddenGlobalError` naming ``module.name`` and the file.

A damaged file (random bytes, a truncated download, malformed reconstruction arguments) raises
:class:`FlamePickleError` -- a :class:`FlameFormatError` and a ``pickle.UnpicklingError`` -- with the
one-line message ``<file>: not a readable FLAME pickle (<reason>)``, whatever went wrong inside the
unpickler (``EOFError``, ``ValueError``, ``MemoryError`` from absurd sizes ...).  Every error this module
raises is a :class:`~talksplat.core.errors.TalksplatError` whose message is one line starting with the file.
Damage must never crash or exhaust the process: the opcodes are walked first (nothing is built) to
refuse memo indices and lengths beyond the data, and sparse index arrays are bounds-checked before
scipy's kernels see them.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from talksplat.core.errors import InputError, TalksplatError

__all__ = ["FlameUnpickler", "ForbiddenGlobalError", "ChumpyObjectError", "FlameFormatError", "FlamePickleError",
           "ChShim", "ChumpyExpression", "safe_load", "safe_load_file", "ALLOWED_GLOBALS"]


class ForbiddenGlobalError(TalksplatError, pickle.UnpicklingError):
    """The pickle names a global outside the FLAME allow-list; nothing from it was executed."""


class ChumpyObjectError(TalksplatError, pickle.UnpicklingError):
    """The pickle holds a chumpy expression (not a plain ``Ch`` array) that we cannot evaluate."""


class FlameFormatError(InputError):
    """The file is not a usable FLAME model (unreadable, missing key, wrong shape, NaN, unusable geometry).

    Defined here so that :func:`safe_load` can raise it; :mod:`talksplat.rigs.flame` exports the same class."""


class FlamePickleError(FlameFormatError, pickle.UnpicklingError):
    """The bytes are not a readable pickle: ``<file>: not a readable FLAME pickle (<reason>)``."""


_MAX_REASON = 200  # characters of the underlying error kept in a FlamePickleError message


def _one_line(text: str, limit: int | None = None) -> str:
    """``text`` with line breaks and other control characters escaped (messages are one line)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(out) > limit:
        out = out[:limit - 3] + "..."
    return out


def _unreadable(filename: str, e: BaseException) -> FlamePickleError:
    what = str(e) if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {e}"
    if isinstance(e, MemoryError):
        what = "MemoryError: the file asks for an absurd amount of memory"
    elif isinstance(e, RecursionError):
        what = "RecursionError: nested too deeply"
    elif isinstance(e, EOFError) and not str(e):
        what = "EOFError: the file ends early"
    return FlamePickleError(f"{filename}: not a readable FLAME pickle ({_one_line(what, _MAX_REASON)})")


# ----------------------------------------------------------------------------- shims
class ChShim:
    """Stand-in for ``chumpy.ch.Ch``: keeps only the array.

    chumpy pickles a ``Ch`` as its class plus its ``__dict__`` (minus the weak-reference caches
    ``_parents`` / ``_cache``); for a plain ``Ch`` the value lives in ``x``.  Other entries
    (``_dirty_vars``, ``_itr``, ``label`` ...) are bookkeeping and are dropped.
    """

    __slots__ = ("x",)

    def __new__(cls, *args, **kwargs):  # NEWOBJ may pass the (empty) constructor args
        obj = object.__new__(cls)
        obj.x = None
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slotstate) form
        if not isinstance(state, dict) or "x" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ChumpyObjectError(f"chumpy.ch.Ch object without array data 'x' (state: {keys})")
        x = state["x"]
        self.x = np.asarray(x.x if isinstance(x, ChShim) else x.array if isinstance(x, _ArrayShim) else x)
        if self.x.dtype == object:
            raise ChumpyObjectError("chumpy.ch.Ch object whose 'x' is not a numeric array")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.x, dtype=dtype)

    def __repr__(self) -> str:
        return f"ChShim(shape={None if self.x is None else self.x.shape})"


class _SparseShim:
    """Collects a pickled scipy CSC/CSR matrix's ``__dict__``; :meth:`to_scipy` rebuilds it."""

    fmt = ""
    __slots__ = ("state",)

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.state = None
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"scipy {self.fmt}_matrix with unexpected state {type(state).__name__}")
        self.state = state

    def to_scipy(self) -> sp.spmatrix:
        s = self.state or {}
        try:
            shape = s.get("_shape", s.get("shape"))
            shape = tuple(int(n) for n in shape)
            data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
        except (KeyError, TypeError, ValueError) as e:
            raise pickle.UnpicklingError(f"malformed scipy {self.fmt}_matrix in pickle: {e!r}") from None
        problem = self._check(shape, data, indices, indptr)
        if problem:
            raise pickle.UnpicklingError(f"malformed scipy {self.fmt}_matrix in pickle: {problem}")
        cls = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
        try:
            m = cls((data, indices, indptr), shape=shape)
            m.check_format(full_check=True)
        except (TypeError, ValueError, IndexError, OverflowError) as e:
            raise pickle.UnpicklingError(f"malformed scipy {self.fmt}_matrix in pickle: {e}") from None
        return m

    def _check(self, shape: tuple, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> str:
        """What is wrong with the compressed-sparse arrays, or "".  scipy's kernels (toarray, products)
        trust them and write out of bounds -- a segmentation fault -- on a damaged file's indices, and
        scipy's own ``check_format(full_check=True)`` skips its checks when ``indptr[-1] <= 0``."""
        if len(shape) != 2 or min(shape) < 0:
            return f"shape {list(shape)}"
        major, minor = (shape[1], shape[0]) if self.fmt == "csc" else shape
        if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1 or data.dtype.kind not in "biufc":
            return "data, indices and indptr must be flat numeric arrays"
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            return "indices and indptr must be integers"
        if len(indptr) != major + 1 or len(indices) != len(data):
            return (f"{len(indptr)} index pointers and {len(indices)} indices for {len(data)} values, "
                    f"shape {list(shape)}")
        ptr = indptr.astype(np.int64)  # a uint64 beyond int64 wraps negative and is refused below
        if ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != len(indices):
            return "index pointers not increasing from 0 to the number of values"
        if len(indices) and (indices.min() < 0 or indices.max() >= minor):
            return f"indices outside [0, {minor})"
        return ""


class _CscShim(_SparseShim):
    fmt = "csc"
    __slots__ = ()


class _CsrShim(_SparseShim):
    fmt = "csr"
    __slots__ = ()


class ChumpyExpression:
    """Inert placeholder for a chumpy *operation* object (``chumpy.reordering.Select``, ...).

    Nothing of chumpy is imported or run: the placeholder only records the class name, so that a
    loader can refuse it when (and only when) it actually needs that value.  :func:`safe_load`
    raises :class:`ChumpyObjectError` for any of them unless ``allow_chumpy_expressions=True``.
    """

    qualname = "chumpy"
    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        pass  # dropped: we cannot evaluate chumpy expressions

    def __repr__(self) -> str:
        return f"<chumpy expression {self.qualname}>"

    @classmethod
    def message(cls, where: str) -> str:
        return (f"{where} is a chumpy expression object '{cls.qualname}', not a plain array; only chumpy.ch.Ch "
                "arrays are supported. Re-export the model with plain numpy arrays (e.g. with chumpy installed: "
                "{k: np.array(v) for k, v in model.items()}).")


_chumpy_placeholders: dict[str, type] = {}


def _chumpy_placeholder(key: str) -> type:
    if key not in _chumpy_placeholders:
        _chumpy_placeholders[key] = type("ChumpyExpression", (ChumpyExpression,),
                                         {"__slots__": (), "qualname": _one_line(key, 200)})
    return _chumpy_placeholders[key]


_SHIM_CLASSES = (ChShim, _CscShim, _CsrShim)


def _is_shim_class(cls) -> bool:
    return cls in _SHIM_CLASSES or (isinstance(cls, type) and issubclass(cls, ChumpyExpression))


# ----------------------------------------------------------------------------- checked callables
class _NdarrayToken:
    """Returned for ``numpy.ndarray`` so the class itself can only be used as _reconstruct's subtype."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()
_np_scalar_impl = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar
#: dtype kinds a FLAME pickle may hold: bool, integers, floats, complex, byte and unicode strings.
_DTYPE_KINDS = "biufcSU"


class _DtypeShim:
    """What ``numpy.dtype(spec)`` gives the unpickler: a plain dtype whose pickled state may only
    choose the byte order.  numpy's own ``dtype.__setstate__`` trusts sizes and flags in the state
    (a damaged file crashes the interpreter), so BUILD never reaches it."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and 5 <= len(state) <= 9 and state[1] in ("<", ">", "|", "=")
                and all(x is None for x in state[2:5])):
            raise pickle.UnpicklingError(f"numpy dtype state {_one_line(repr(state), 80)} refused")
        if state[1] in ("<", ">") and self.dtype.itemsize > 1 and self.dtype.kind != "S":
            self.dtype = self.dtype.newbyteorder(state[1])

    def __repr__(self) -> str:
        return f"dtype({self.dtype.str!r})"


def _as_dtype(d: Any, what: str) -> np.dtype:
    if not isinstance(d, _DtypeShim):
        raise pickle.UnpicklingError(f"{what} needs a numpy dtype, got {type(d).__name__}")
    return d.dtype


class _ArrayShim:
    """What numpy's ``_reconstruct`` gives the unpickler; its BUILD state (version, shape, dtype,
    is_fortran, raw bytes) is checked -- sizes must agree -- and turned into a plain array here rather
    than by numpy's ``ndarray.__setstate__``."""

    __slots__ = ("array",)

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.array = None
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError(f"numpy array state of {type(state).__name__} refused")
        shape, dtype, fortran, raw = state
        dt = _as_dtype(dtype, "numpy array")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"numpy array shape {_one_line(repr(shape), 80)} refused")
        if isinstance(raw, str):
            raw = raw.encode("latin1")  # Python 2 str
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"numpy array data of {type(raw).__name__} refused (only bytes)")
        count = 1
        for n in shape:
            count *= n
        if len(raw) != count * dt.itemsize:
            raise pickle.UnpicklingError(f"numpy array of shape {list(shape)} and dtype {dt.str} needs "
                                         f"{count * dt.itemsize} bytes, the file holds {len(raw)}")
        flat = np.frombuffer(raw, dt, count) if count else np.zeros(0, dt)
        self.array = flat.reshape(shape, order="F" if fortran is True or fortran == 1 else "C").copy()

    def __array__(self, dtype=None, copy=None):
        if self.array is None:
            raise pickle.UnpicklingError("numpy array without data")
        return np.asarray(self.array, dtype=dtype)

    def __repr__(self) -> str:
        return f"ndarray(shape={None if self.array is None else self.array.shape})"


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"numpy _reconstruct of {subtype!r} refused (only numpy.ndarray)")
    # numpy always writes (ndarray, (0,), 'b'); the data arrives with BUILD (__setstate__).
    if not (isinstance(shape, tuple) and len(shape) <= 1 and all(isinstance(n, int) and 0 <= n <= 1 for n in shape)):
        raise pickle.UnpicklingError(f"numpy _reconstruct with shape {shape!r} refused")
    return _ArrayShim()


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy.dtype({type(spec).__name__}) refused (only type strings)")
    dt = np.dtype(spec, bool(align), bool(copy))
    if dt.kind not in _DTYPE_KINDS or dt.hasobject or dt.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy.dtype({_one_line(repr(spec), 40)}) refused (only numbers and strings)")
    return _DtypeShim(dt)


def _np_scalar(dtype, data=None):
    dt = _as_dtype(dtype, "numpy scalar")
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dt.str} needs {dt.itemsize} bytes")
    return _np_scalar_impl(dt, bytes(data))


def _np_frombuffer(buf, dtype, shape, order):
    dt = _as_dtype(dtype, "numpy _frombuffer")
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise pickle.UnpicklingError("numpy _frombuffer needs a bytes buffer")
    arr = np.frombuffer(buf, dt)
    return arr.reshape(shape, order=order if order in ("C", "F") else "C")


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused (only latin1 strings)")
    return obj.encode("latin1")


def _copyreg_reconstructor(cls, base, state):
    if not _is_shim_class(cls) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copy_reg._reconstructor({cls!r}, {base!r}, ...) refused")
    return cls.__new__(cls)


def _copyreg_newobj(cls, *args):
    if not _is_shim_class(cls):
        raise pickle.UnpicklingError(f"copyreg.__newobj__({cls!r}) refused")
    return cls.__new__(cls)


def _spellings(names: dict[str, Any], modules: tuple[str, ...]) -> dict[str, Any]:
    return {f"{m}.{n}": obj for m in modules for n, obj in names.items()}


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core._multiarray_umath",
               "numpy._core._multiarray_umath")
_SPARSE_MODULES = {"csc": ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.compressed", "scipy.sparse"),
                   "csr": ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse.compressed", "scipy.sparse")}

#: ``"module.name"`` -> what the unpickler hands out for it.  Nothing else resolves.
ALLOWED_GLOBALS: dict[str, Any] = {
    **_spellings({"_reconstruct": _np_reconstruct, "scalar": _np_scalar}, _MULTIARRAY),
    **_spellings({"_frombuffer": _np_frombuffer}, ("numpy.core.numeric", "numpy._core.numeric")),
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _np_dtype,
    **_spellings({"csc_matrix": _CscShim, "csc_array": _CscShim}, _SPARSE_MODULES["csc"]),
    **_spellings({"csr_matrix": _CsrShim, "csr_array": _CsrShim}, _SPARSE_MODULES["csr"]),
    "chumpy.ch.Ch": ChShim,
    "copy_reg._reconstructor": _copyreg_reconstructor,
    "copyreg._reconstructor": _copyreg_reconstructor,
    "copy_reg.__newobj__": _copyreg_newobj,
    "copyreg.__newobj__": _copyreg_newobj,
    "__builtin__.object": object,
    "builtins.object": object,
    "__builtin__.set": set,
    "builtins.set": set,
    "__builtin__.frozenset": frozenset,
    "builtins.frozenset": frozenset,
    "collections.OrderedDict": collections.OrderedDict,
    "_codecs.encode": _codecs_encode,
}


class FlameUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (see the module docstring)."""

    def __init__(self, file, *, filename: str = "<bytes>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding, fix_imports=True)
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[key]
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_placeholder(key)  # inert; refused by safe_load / the loader when used
        raise ForbiddenGlobalError(
            f"{self.filename}: refusing to load: the pickle asks for the global '{key}', which is not "
            "on the FLAME allow-list (numpy arrays, scipy sparse matrices, chumpy arrays); nothing was "
            "executed")

    def persistent_load(self, pid):  # pragma: no cover - FLAME never uses persistent ids
        raise ForbiddenGlobalError(f"{self.filename}: refusing persistent id {pid!r}")


def _finalize(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace shims by numpy arrays / scipy matrices, recursively through dicts, lists and tuples."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, ChShim):
        out = obj.x
        if out is None:
            raise ChumpyObjectError("chumpy.ch.Ch object without state")
    elif isinstance(obj, _ArrayShim):
        out = obj.array
        if out is None:
            raise pickle.UnpicklingError("numpy array without data")
    elif isinstance(obj, _DtypeShim):
        out = obj.dtype
    elif isinstance(obj, _SparseShim):
        out = obj.to_scipy()
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[k] = _finalize(v, memo)
        return out
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = out
        out.extend(_finalize(v, memo) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_finalize(v, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = out
    return out


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _check_memo_indices(data: bytes) -> None:
    """Walk the opcodes (building nothing) and refuse a memo index beyond the opcodes read so far.

    CPython's C unpickler grows its memo table to the index a PUT names and zero-fills it: one
    damaged 4-byte ``LONG_BINPUT`` index asks for gigabytes (MemoryError, or the OOM killer).  A
    length running past the end of the data is refused here too (the unpickler would first allocate
    that length).  Any other stream the walk cannot parse is left to the unpickler, which fails on it
    at the same place with its own message; the PUTs before that place have been checked."""
    try:
        for n, (op, arg, pos) in enumerate(pickletools.genops(io.BytesIO(data))):
            if op.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= n):
                raise pickle.UnpicklingError(f"memo index {_one_line(repr(arg), 40)} at byte {pos} is out of range")
    except pickle.UnpicklingError:
        raise
    except ValueError as e:
        if "remain" in str(e):  # pickletools: "expected <n> bytes in a bytes8, but only <m> remain"
            raise pickle.UnpicklingError("pickle data was truncated") from None
    except Exception:  # noqa: BLE001 - malformed: the unpickler reports it
        return


def safe_load(data: bytes, *, filename: str = "<bytes>", allow_chumpy_expressions: bool = False) -> Any:
    """Unpickle FLAME-style bytes with :class:`FlameUnpickler`; shims come back as arrays/matrices.

    With ``allow_chumpy_expressions`` chumpy operation objects come back as inert
    :class:`ChumpyExpression` placeholders (the caller must refuse the ones it needs); otherwise any
    of them raises :class:`ChumpyObjectError`.

    Raises (each a :class:`~talksplat.core.errors.TalksplatError` and a ``pickle.UnpicklingError``,
    message one line starting with ``filename``):
        ForbiddenGlobalError: the pickle names a global outside the allow-list.
        ChumpyObjectError: it holds a chumpy expression rather than a plain ``Ch`` array.
        FlamePickleError: anything else malformed (random bytes, truncated file, bad reconstruction
            args): ``<filename>: not a readable FLAME pickle (<reason>)``.
    """
    try:
        _check_memo_indices(data)
        obj = FlameUnpickler(io.BytesIO(data), filename=filename).load()
        out = _finalize(obj)
    except (ForbiddenGlobalError, ChumpyObjectError) as e:  # a refused payload: keep its own message
        msg = _one_line(str(e))
        raise type(e)(msg if msg.startswith(filename) else f"{filename}: {msg}") from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged byte stream makes the unpickler or a stand-in raise
        raise _unreadable(filename, e) from None
    if not allow_chumpy_expressions:
        found = _find_chumpy_expression(out)
        if found is not None:
            raise ChumpyObjectError(found[1].message(f"{filename}: {found[0]}"))
    return out


def _find_chumpy_expression(obj: Any, where: str = "the pickle", depth: int = 0):
    if isinstance(obj, ChumpyExpression):
        return where, type(obj)
    if depth > 50:
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _find_chumpy_expression(v, f"key {k!r}" if isinstance(obj, dict) and depth == 0 else where, depth + 1)
        if found is not None:
            return found
    return None


def safe_load_file(path: str | Path) -> Any:
    """:func:`safe_load` on a file's bytes (:class:`FlamePickleError` if it cannot be read)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlamePickleError(f"{path}: not a readable FLAME pickle (cannot read: {e.strerror or e})") from None
    return safe_load(data, filename=str(path))
