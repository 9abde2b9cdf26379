"""The grading contract: what surrounds every grader while it tries a learner's answer.

One guard (:func:`guarded`) runs each grade. Inside it

* torch's global settings and every random generator are saved and put back afterwards, and an
  answer that leaves a setting changed (the default dtype, grad mode, ...) is told so;
* a watchdog thread stops code that runs past a time limit, by raising :class:`TimeLimit` in the
  grading thread (no SIGALRM needed, so it works in any thread and on any OS);
* calls from the learner's code into the package code an exercise forbids are refused, however they
  are reached (imported, through a subclass, a closure, ``super()``, or a module held inside);
* the checker modules' attributes are put back to what they were at import before grading, and an
  answer that changes one is refused.

Everything here runs in the learner's own process, so it is a fence, not a lock: see GRADING.md.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import inspect
import os
import random
import site
import sys
import sysconfig
import threading
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class TimeLimit(BaseException):
    """Raised in the grading thread by the watchdog (a BaseException, so `except Exception` lets it pass)."""


# ---------------------------------------------------------------- whose code is it?


def _library_directories() -> tuple[str, ...]:
    """Directories whose code is not the learner's: this package, the standard library, site-packages."""
    paths = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # adapterlib/
    paths.update(
        value
        for key, value in sysconfig.get_paths().items()
        if key in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    paths.update(entry for entry in sys.path if "-packages" in entry)
    return tuple(os.path.join(os.path.abspath(p), "") for p in paths if p)


LIBRARY_DIRECTORIES = _library_directories()
PACKAGE_DIRECTORIES = tuple(
    os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "")
    for module in (sys.modules["adapterlib"], __import__("peft"))
)
CHECKER_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


LEARNER_PSEUDO_FILES = ("<ipython-input", "<stdin>", "<cell", "<learner")


def is_learner_file(filename: str) -> bool:
    """A notebook cell (``/tmp/ipykernel_.../123.py``), a script, a test: anything not a library's.

    Of the ``<...>`` names, only the interactive ones count; ``<string>`` is code that libraries
    generate (a dataclass's ``__init__``, say)."""
    if filename.startswith("<"):
        return filename.startswith(LEARNER_PSEUDO_FILES)
    return not os.path.abspath(filename).startswith(LIBRARY_DIRECTORIES)


def is_learner_class(cls: type) -> bool:
    """True for a class defined in learner code (a notebook's ``__main__``, a test or script module)."""
    if cls.__module__ == "builtins":
        return False
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return filename is None or is_learner_file(filename)


def raised_by_learner(error: BaseException) -> bool:
    """True if ``error`` was raised in the learner's own code (the template's ``raise NotImplementedError``),
    not in a library it called (torch's "missing the required forward function" for a misspelt forward)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and is_learner_file(frames[-1].filename)


def learner_line(error: BaseException) -> str | None:
    """The learner's last line in ``error``'s traceback, as ``line N: <source>``, or None."""
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        if is_learner_file(frame.filename):
            found = frame
    if found is None:
        return None
    source = (found.line or "").strip()
    return f"line {found.lineno}: {source}" if source else f"line {found.lineno}"


# ---------------------------------------------------------------- torch's global state


@dataclass(frozen=True)
class GlobalState:
    """The process-wide settings an answer could change, and every random generator's state."""

    default_dtype: torch.dtype
    default_device: torch.device
    matmul_precision: str
    grad_enabled: bool
    deterministic: bool
    deterministic_warn_only: bool
    anomaly: bool
    num_threads: int
    torch_rng: torch.Tensor
    numpy_rng: Any
    python_rng: Any

    @classmethod
    def save(cls) -> GlobalState:
        return cls(
            torch.get_default_dtype(),
            torch.get_default_device(),
            torch.get_float32_matmul_precision(),
            torch.is_grad_enabled(),
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.is_anomaly_enabled(),
            torch.get_num_threads(),
            torch.get_rng_state(),
            np.random.get_state(),
            random.getstate(),
        )

    def restore(self) -> None:
        torch.set_default_dtype(self.default_dtype)
        if torch.get_default_device() != self.default_device:  # setting it installs a mode: only on a change
            cpu = self.default_device == torch.device("cpu")
            torch.set_default_device(None if cpu else self.default_device)
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.set_grad_enabled(self.grad_enabled)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.set_anomaly_enabled(self.anomaly)
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)

    def settings_changed_since(self, before: GlobalState) -> list[str]:
        """The settings (not the random generators, which any sampling moves) that differ from ``before``."""
        names = {
            "default_dtype": "torch's default dtype (torch.set_default_dtype)",
            "default_device": "torch's default device (torch.set_default_device)",
            "matmul_precision": "torch.set_float32_matmul_precision",
            "grad_enabled": "grad mode (torch.set_grad_enabled / no_grad outside a with block)",
            "deterministic": "torch.use_deterministic_algorithms",
            "deterministic_warn_only": "torch.use_deterministic_algorithms(warn_only=...)",
            "anomaly": "anomaly detection (torch.autograd.set_detect_anomaly)",
            "num_threads": "torch's thread count (torch.set_num_threads)",
        }
        return [
            f"{says}: {getattr(before, name)} -> {getattr(self, name)}"
            for name, says in names.items()
            if getattr(self, name) != getattr(before, name)
        ]


# ---------------------------------------------------------------- the watchdog


_GUARD_FILES = (
    os.path.abspath(__file__),
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"),
    os.path.abspath(contextlib.__file__),  # entering and leaving the guard's with blocks
)


def _in_the_guard(thread_id: int) -> bool:
    """True while ``thread_id`` runs the contract's own code (the guard's bookkeeping, the profile hook),
    where an exception from outside would leave the guard half undone."""
    frame = sys._current_frames().get(thread_id)
    return frame is None or os.path.abspath(frame.f_code.co_filename) in _GUARD_FILES


def _let_a_late_one_arrive() -> None:
    """Run a few bytecodes, so that a TimeLimit raised just as the block ended arrives here and is dropped.

    An exception raised into a thread is delivered at its next check of the interpreter's pending work,
    which a loop's backward jump makes. (Taking it back with ``PyThreadState_SetAsyncExc(thread, NULL)``
    instead leaves CPython 3.11's pending-work flag set, and with a profile hook on, the next function
    call then spins at its first line.)"""
    try:
        for _ in range(8):
            pass
    except TimeLimit:
        pass


@contextmanager
def time_limit(seconds: float, retry: float = 0.05) -> Iterator[None]:
    """Raise :class:`TimeLimit` in this thread if the block runs longer than ``seconds``.

    A watchdog thread raises it between two Python bytecodes of the grading thread, and only while that
    thread runs the answer or the checker, never the guard's own code; it raises again every ``retry``
    seconds until the block ends, so an answer that catches it (``except BaseException``) is stopped
    too. A single long call into C (one huge matrix product) finishes first.
    """
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False}
    wake = threading.Event()

    def watchdog() -> None:
        if wake.wait(seconds):
            return
        while True:
            with lock:
                if state["done"]:
                    return
                if not _in_the_guard(thread_id):
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(thread_id), ctypes.py_object(TimeLimit)
                    )
            wake.wait(retry)

    threading.Thread(target=watchdog, name="grading-watchdog", daemon=True).start()
    try:
        yield
    finally:
        _let_a_late_one_arrive()
        with lock:
            state["done"] = True
        wake.set()


# ---------------------------------------------------------------- package code refused


CodeKey = tuple[str, int, str]


def code_key(code: types.CodeType) -> CodeKey:
    """Where a function's code was written: its file, first line and qualified name. A copy of the code
    object (``__code__.replace()``, marshal) keeps all three, so it is recognised as the original."""
    return (code.co_filename, code.co_firstlineno, code.co_qualname)


def code_objects(things: Iterable[Any]) -> dict[CodeKey, str]:
    """``{code_key: name}`` of every function in ``things``: functions, the package's classes (their
    methods, properties and those of their package base classes) and modules (all they define, each
    class with its own methods only: a module's subclass of a package class does not forbid the base)."""
    found: dict[CodeKey, str] = {}

    def add(thing: Any, name: str, with_bases: bool = True) -> None:
        thing = getattr(thing, "__func__", thing)  # staticmethod, classmethod, bound method
        if isinstance(thing, property):
            for part in (thing.fget, thing.fset):
                if part is not None:
                    add(part, name)
        elif inspect.isfunction(thing):
            thing = inspect.unwrap(thing)  # past decorators such as torch.no_grad(), whose code is torch's
            if os.path.abspath(thing.__code__.co_filename).startswith(PACKAGE_DIRECTORIES):
                found.setdefault(code_key(thing.__code__), name)
        elif inspect.isclass(thing):
            for cls in thing.__mro__ if with_bases else (thing,):
                if cls.__module__.split(".")[0] in ("adapterlib", "peft"):
                    for attribute, value in vars(cls).items():
                        add(value, f"{cls.__module__}.{cls.__qualname__}.{attribute}")

    for thing in things:
        if inspect.ismodule(thing):
            for name, value in vars(thing).items():
                if getattr(value, "__module__", None) == thing.__name__:
                    add(value, f"{thing.__name__}.{name}", with_bases=False)
        else:
            add(thing, f"{getattr(thing, '__module__', '')}.{getattr(thing, '__qualname__', thing)}")
    return found


def _called_from_learner(frame: types.FrameType, stop: types.FrameType | None) -> bool:
    code = frame.f_code
    if code.co_argcount and code.co_varnames[0] in ("self", "cls"):
        first = frame.f_locals.get(code.co_varnames[0])
        cls = first if inspect.isclass(first) else type(first)
        if any(is_learner_class(base) for base in cls.__mro__):
            return True  # a package method running on the learner's subclass or borrowed into its class
    caller = frame.f_back
    while caller is not None and caller is not stop:
        if is_learner_file(caller.f_code.co_filename):
            return True
        caller = caller.f_back
    return False


@contextmanager
def package_code_refused(forbidden: dict[CodeKey, str]) -> Iterator[list[str]]:
    """While the block runs, record each call from learner code into ``forbidden``, in this thread and
    in any thread started meanwhile; the caller refuses the answer if the yielded list is not empty.

    The calls are recorded, not stopped: raising from inside a profile hook can leave the interpreter
    in a bad state, and an answer is refused just the same once the grade ends. The grader's own calls
    (no learner frame between the block and the call, no learner ``self``) are not recorded. A call
    made straight from the learner's code is named first (``AdapterConfig``, not the ``__post_init__``
    it runs). The list also names it if the learner's code switched the watch off.
    """
    stop = sys._getframe(2)  # the frame that entered this block: its callers are outside the grade
    refused: list[str] = []

    def watch(frame: types.FrameType, event: str, _: Any) -> None:
        if event == "call":
            name = forbidden.get(code_key(frame.f_code))
            if name is not None and _called_from_learner(frame, stop):
                caller = frame.f_back
                direct = caller is not None and is_learner_file(caller.f_code.co_filename)
                if direct:
                    refused.insert(0, name)
                else:
                    refused.append(name)

    previous, previous_in_threads = sys.getprofile(), threading.getprofile()
    sys.setprofile(watch)
    threading.setprofile(watch)
    try:
        yield refused
    finally:
        if sys.getprofile() is not watch:
            refused.append("sys.setprofile (your code switched off the grader's watch)")
        sys.setprofile(previous)
        threading.setprofile(previous_in_threads)


# ---------------------------------------------------------------- the checker modules' attributes


def _same(a: Any, b: Any, depth: int = 0) -> bool:
    if a is b:
        return True
    if type(a) is not type(b) or depth > 6:
        return False
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, depth + 1) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], depth + 1) for k in a)
    if hasattr(a, "__dict__") and not callable(a):
        return _same(vars(a), vars(b), depth + 1)
    try:
        return bool(a == b)
    except Exception:
        return False


def _kept(value: Any) -> Any:
    """A private deep copy of a data attribute (None for functions, classes and modules, kept by identity)."""
    if callable(value) or inspect.ismodule(value):
        return None
    try:
        return copy.deepcopy(value)
    except Exception:
        return None


class GuardedModule(types.ModuleType):
    """A checker module whose attributes cannot be assigned or deleted while an answer is graded."""

    read_only = False
    attempts: list[str] = []

    def __setattr__(self, name: str, value: Any) -> None:
        if GuardedModule.read_only:
            GuardedModule.attempts.append(f"{self.__name__.rsplit('.', 1)[-1]}.{name}")
            raise AttributeError(f"{self.__name__} belongs to the grader and is read-only while it grades")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if GuardedModule.read_only:
            GuardedModule.attempts.append(f"{self.__name__.rsplit('.', 1)[-1]}.{name}")
            raise AttributeError(f"{self.__name__} belongs to the grader and is read-only while it grades")
        super().__delattr__(name)


@contextmanager
def grader_read_only() -> Iterator[list[str]]:
    """While the block runs, assigning an attribute of a checker module raises; the list names the attempts."""
    GuardedModule.read_only, GuardedModule.attempts = True, []
    try:
        yield GuardedModule.attempts
    finally:
        GuardedModule.read_only = False


class Pristine:
    """Each checker module's attributes as they were at import, to put back and to compare with."""

    def __init__(self, modules: Iterable[types.ModuleType]) -> None:
        self.modules: dict[str, tuple[types.ModuleType, dict[str, tuple[Any, Any]]]] = {}
        for module in modules:
            self.add(module)

    def add(self, module: types.ModuleType, by_identity: Iterable[str] = ()) -> None:
        """Keep ``module``'s attributes; those in ``by_identity`` (registries, settings) may change
        contents through the package's own functions, so only their identity is kept."""
        module.__class__ = GuardedModule
        self.modules[module.__name__] = (
            module,
            {
                name: (value, None if name in by_identity else _kept(value))
                for name, value in vars(module).items()
                if not name.startswith("__")
            },
        )

    def changes(self) -> list[str]:
        """``module.attribute`` for each attribute changed, added or removed since import."""
        found = []
        for module_name, (module, kept) in self.modules.items():
            now = {name: value for name, value in vars(module).items() if not name.startswith("__")}
            short = module_name.rsplit(".", 1)[-1]
            for name in sorted(now.keys() | kept.keys()):
                if name not in kept or name not in now or now[name] is not kept[name][0]:
                    found.append(f"{short}.{name}")
                elif kept[name][1] is not None and not _same(now[name], kept[name][1]):
                    found.append(f"{short}.{name}")
        return found

    def put_back(self) -> None:
        for module, kept in self.modules.values():
            attributes = vars(module)  # written directly: the module may be read-only just now
            for name in [n for n in attributes if not n.startswith("__") and n not in kept]:
                del attributes[name]
            for name, (value, private) in kept.items():
                if private is not None and not _same(value, private):
                    value = copy.deepcopy(private)  # contents changed in place: a fresh copy of the original
                    kept[name] = (value, private)
                if attributes.get(name) is not value:
                    attributes[name] = value


class LibraryFunctions:
    """The public attributes of the libraries the graders compute with (torch, its functional and linalg
    modules, torch.Tensor's methods, math, numpy, builtins), as they were at import: an answer that
    replaces ``torch.allclose`` or ``math.isclose`` would otherwise decide its own grade."""

    _INHERITED = object()  # a class's attribute that comes from a base class (torch.Tensor.sum)

    def __init__(self, owners: Iterable[Any]) -> None:
        self.kept = [
            (owner, {name: vars(owner).get(name, self._INHERITED) for name in dir(owner) if name[:1] != "_"})
            for owner in owners
        ]

    def changes(self) -> list[str]:
        return [
            f"{getattr(owner, '__name__', owner)}.{name}"
            for owner, kept in self.kept
            for name, value in kept.items()
            if vars(owner).get(name, self._INHERITED) is not value
        ]

    def put_back(self) -> None:
        for owner, kept in self.kept:
            for name, value in kept.items():
                if vars(owner).get(name, self._INHERITED) is value:
                    continue
                if value is self._INHERITED:
                    delattr(owner, name)
                else:
                    setattr(owner, name, value)


LIBRARIES = LibraryFunctions(
    (torch, torch.nn.functional, torch.linalg, torch.Tensor, __import__("math"), np, __import__("builtins"))
)


# ---------------------------------------------------------------- helpers for the graders


def copied(value: Any) -> Any:
    """A copy of an input the learner's code is handed, so that what it does to it stays with it."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (int, float, str, bool, type(None))) or callable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def nonfinite(values: torch.Tensor) -> str | None:
    """``"NaN at 3 of 48 entries"``-style words for the non-finite entries of ``values``, or None."""
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        return None
    nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
    if not nan and not inf:
        return None
    parts = [f"NaN at {nan}" if nan else "", f"inf at {inf}" if inf else ""]
    return f"{' and '.join(p for p in parts if p)} of its {values.numel()} entries"


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter, int, float, bool, str, complex, np.ndarray)


def disguised(value: Any, depth: int = 0) -> str | None:
    """The name of a subclass of a tensor, number or string found in ``value`` (a tensor subclass can
    answer ``torch.allclose`` as it likes, an int subclass ``==``), or None if all are plain."""
    if isinstance(value, (tuple, list)) and depth < 3:
        return next((found for item in value if (found := disguised(item, depth + 1))), None)
    if isinstance(value, dict) and depth < 3:
        return next((found for item in value.values() if (found := disguised(item, depth + 1))), None)
    if type(value).__module__ == "numpy":  # numpy's own scalars (np.float64 subclasses float)
        return None
    for plain in _PLAIN_TYPES:
        if isinstance(value, plain) and type(value) not in _PLAIN_TYPES:
            return f"{type(value).__name__} (a subclass of {plain.__name__})"
    return None


def call(function: Callable, *args: Any, what: str) -> Any:
    """Call the learner's ``function`` on copies of ``args``; its exception becomes a NotYet naming
    ``what`` (the case) and the learner's line, and so does a result holding a subclass of a tensor or
    a number. NotImplementedError passes through."""
    from . import NotYet

    try:
        result = function(*(copied(a) for a in args))
    except (NotImplementedError, NotYet):
        raise
    except Exception as error:
        raise NotYet(f"{what}, your code raised {describe_error(error)}") from None
    return plain_result(result, what)


def plain_result(result: Any, what: str) -> Any:
    """``result`` unchanged, or NotYet if it holds a subclass of a tensor or a number (see :func:`disguised`)."""
    from . import NotYet

    odd = disguised(result)
    if odd is not None:
        raise NotYet(f"{what}, your code returned a {odd}; return plain torch tensors and Python numbers.")
    return result


def describe_error(error: BaseException) -> str:
    """``ValueError: message (line 3: x = y[4])``: the type, the message and the learner's line."""
    where = learner_line(error)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"{text} (at your {where})" if where else text
