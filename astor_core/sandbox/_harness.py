"""Trusted fork server that runs inside the bubblewrap sandbox (stdlib only, no package imports).

Started once per worker as ``python -I -S _harness.py <json settings>``; it reads job requests
(8-byte length + pickle) on fd 0 and answers on fd 1. For each job it forks one child that
drops to the worker's unprivileged uid, applies rlimits, runs trusted setup, arms an audit
hook, runs the untrusted program and then each trusted check, and reports every confirmed
verdict as a frame prefixed by a per-job random nonce on a pipe. The server never runs
untrusted code itself: it waits, enforces wall time with SIGKILL, kills every process left
in the sandbox's pid namespace, and forwards the raw frames to the host, which verifies them.

The plain-value rule (``is_plain``), the helpers that rewritten checks call, and
``compile_check`` (rewrite via ``_checkrewrite`` + constant substitution) live here because the
child must use them; they are importable on the host for tests.
"""

import builtins as _builtins_module

# Every function below resolves builtin names through this private copy, taken before any
# untrusted code exists, so that candidate monkeypatching of `builtins` never reaches them.
__builtins__ = dict(_builtins_module.__dict__)  # noqa: A001
_PRISTINE_BUILTINS = dict(_builtins_module.__dict__)

import ast  # noqa: E402
import contextlib  # noqa: E402
import fcntl  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import operator  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402

# Captured references: the child uses only these after the candidate has run.
_write = os.write
_exit = os._exit
_register_at_fork = os.register_at_fork
_type = type
_len = len
_repr = repr
_exec = exec
_eval = eval
_isinstance = isinstance
_ModuleType = types.ModuleType
_sys_modules = sys.modules
_BaseException = BaseException
_all = all
_map = map
_is = operator.is_
_gc_callbacks = gc.callbacks
_gc_disable = gc.disable
_gc_collect = gc.collect
_blake2b = hashlib.blake2b

try:  # inside the sandbox this file runs as a script next to _checkrewrite.py
    from . import _checkrewrite
except ImportError:  # pragma: no cover - the in-sandbox path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _checkrewrite

    del sys.path[0]

PLACEHOLDER = _checkrewrite.PLACEHOLDER
_NoneType = type(None)
_type_name = type.__dict__["__name__"].__get__

# A blocker with throwaway globals: functions handed to untrusted code (installed in place of
# `signal.signal`, `_imp.create_builtin`...) must not lead back to this module's globals.
_blocker_globals: dict = {"__builtins__": {"PermissionError": PermissionError}}
exec(  # noqa: S102 - constant trusted source
    "def blocked(*args, **kwargs):\n    raise PermissionError('sandbox: this operation is blocked')\n",
    _blocker_globals,
)
_BLOCKER = _blocker_globals.pop("blocked")

# ---------------------------------------------------------------------------------------
# The plain-value rule and the helpers that rewritten checks call.
# ---------------------------------------------------------------------------------------


import collections as _collections  # noqa: E402

_deque = _collections.deque
_OrderedDict = _collections.OrderedDict
_defaultdict = _collections.defaultdict
_Counter = _collections.Counter
_COUNTER_DICT = dict(_Counter.__dict__)
_mappingproxy_get = types.MappingProxyType.get


def _counter_intact() -> bool:
    """Counter is a Python class (patchable): accept it only while its methods are the real ones."""
    current = _Counter.__dict__
    if _len(current) != _len(_COUNTER_DICT):
        return False
    return all(_mappingproxy_get(current, key) is value for key, value in _COUNTER_DICT.items())


def is_plain(value: object, budget: int = 10_000_000) -> bool:
    """True when `value` and everything inside it has an exact built-in type (or one of the
    standard containers deque, OrderedDict, defaultdict, and an untampered Counter).

    >>> is_plain([1, (2.0, "a"), {"k": {None, b"x"}}, frozenset({True})])
    True
    >>> class Sneaky(int): pass
    >>> is_plain([1, Sneaky(2)])
    False
    >>> shared = (1, 3)
    >>> is_plain((shared,) * 4)
    True
    """
    stack = [value]
    seen = set()
    pop = stack.pop
    push = stack.append
    extend = stack.extend
    while stack:
        budget -= 1
        if budget < 0:
            return False
        x = pop()
        t = _type(x)
        if t is int or t is str or t is float or t is bool or t is _NoneType:
            continue
        if t is bytes or t is complex:
            continue
        if (
            t is list
            or t is tuple
            or t is dict
            or t is set
            or t is frozenset
            or t is _deque
            or t is _OrderedDict
            or t is _defaultdict
        ):
            pass
        elif t is _Counter:
            if not _counter_intact():
                return False
        else:
            return False
        key = id(x)
        if key in seen:
            continue  # shared (or self-referencing) container: already checked
        seen.add(key)
        if t is list or t is tuple or t is set or t is frozenset or t is _deque:
            extend(x)
        else:
            for k, v in dict.items(x):
                push(k)
                push(v)
    return True


def keep(value):
    """Return `value` unchanged if it is plain, else raise TypeError (a failed check)."""
    if is_plain(value):
        return value
    raise TypeError("check saw a value that is not a plain built-in value")


_CMP = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": operator.is_,
    "IsNot": operator.is_not,
}
_BIN = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mult": operator.mul,
    "MatMult": operator.matmul,
    "Div": operator.truediv,
    "FloorDiv": operator.floordiv,
    "Mod": operator.mod,
    "Pow": operator.pow,
    "LShift": operator.lshift,
    "RShift": operator.rshift,
    "BitOr": operator.or_,
    "BitXor": operator.xor,
    "BitAnd": operator.and_,
}


def cmp(left, ops, *rights):
    """A comparison chain whose operands are all checked plain right before comparing."""
    operands = (left, *rights)
    for i in range(_len(ops)):
        a = operands[i]
        b = operands[i + 1]
        op = ops[i]
        if op != "Is" and op != "IsNot" and not (is_plain(a) and is_plain(b)):
            raise TypeError("comparison of a value that is not a plain built-in value")
        if not _CMP[op](a, b):
            return False
    return True


def binop(op, a, b):
    """An arithmetic operator applied only to plain operands."""
    if not (is_plain(a) and is_plain(b)):
        raise TypeError("arithmetic on a value that is not a plain built-in value")
    return _BIN[op](a, b)


_ARG_OK_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
    range,
    slice,
)
_GUARDED_CALLEES = (
    types.BuiltinFunctionType,
    type,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
)
_VIEW_TYPES = (type({}.keys()), type({}.values()), type({}.items()))
_type_flags = type.__dict__["__flags__"].__get__
_HEAPTYPE = 1 << 9
_TYPE_SUBCLASS = 1 << 31


def _checked(iterator):
    for item in iterator:
        yield keep(item)


def _arg(a):
    if is_plain(a):
        return a
    t = _type(a)
    for ok in _ARG_OK_TYPES:
        if t is ok:
            return a
    if t is tuple:
        for x in a:
            if _type(x) is not type:
                break
        else:
            return a  # e.g. isinstance(x, (int, float))
    for view in _VIEW_TYPES:
        if t is view:
            if is_plain(list(a)):
                return a
            break
    if t is types.GeneratorType or (
        _type(t) is type and not _type_flags(t) & _HEAPTYPE and hasattr(t, "__next__")
    ):
        return _checked(a)  # items are checked plain as the built-in consumes them
    raise TypeError("built-in call on a value that is not a plain built-in value")


def call(func, /, *args, **kwargs):
    """A call in a check. Built-in callables (len, abs, sorted, math.isclose, int...) only
    receive plain values, functions, types, modules, or iterators whose items are checked
    plain as they are consumed, so no dunder of an untrusted object answers for them.

    When the check uses standard-library Python code (it imports or names modules), a call
    that may run untrusted code (the candidate, or a built-in handed one of its functions)
    is followed by the same restore as before the check: what the candidate patches while
    it runs (``random.Random.randrange``...) never reaches the check's later calls."""
    t = _type(func)
    builtin = False
    for guarded in _GUARDED_CALLEES:
        if t is guarded:
            args = [_arg(a) for a in args]
            kwargs = {k: _arg(v) for k, v in kwargs.items()}
            builtin = True
            break
    if not _AFTER_CALL:
        return func(*args, **kwargs)
    if (builtin or _trusted_callable(func)) and _trusted_args(args, kwargs):
        return func(*args, **kwargs)
    try:
        return func(*args, **kwargs)
    finally:
        _after_untrusted()


_AFTER_CALL: list = []
"""(module, names) restores the running check repeats after each untrusted call (empty: the
check runs no standard-library Python code, so there is nothing to repeat)."""
_TRUSTED_GLOBALS: set = set()
"""ids of the globals of trusted Python code: real modules' dicts, and the running check's
namespace and trusted definitions."""
_TRUSTED_CLASSES: set = set()
"""ids of the standard library's own Python classes (snapshotted, restored like modules)."""
_func_globals = types.FunctionType.__dict__["__globals__"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_method_self = types.MethodType.__dict__["__self__"].__get__


def _trusted_callable(f) -> bool:
    """A function of the standard library or of the check, a method of one on a trusted
    object, a built-in, or a trusted class: calling it runs no untrusted code by itself."""
    t = _type(f)
    if t is _FunctionType:
        return id(_func_globals(f)) in _TRUSTED_GLOBALS
    if t is _MethodType:
        return _trusted_callable(_method_func(f)) and _trusted_class(_type(_method_self(f)))
    if _type_flags(t) & _TYPE_SUBCLASS:  # a class (never asks the object's __class__)
        return _trusted_class(f)
    for builtin in _GUARDED_CALLEES:  # noqa: SIM110 - a loop: any() would build a generator per call
        if t is builtin:
            return True
    return False


def _trusted_class(cls) -> bool:
    return not (_type_flags(cls) & _HEAPTYPE) or id(cls) in _TRUSTED_CLASSES


def _trusted_args(args, kwargs) -> bool:
    """No argument is a function, method or class that would run untrusted code."""
    for a in args:
        t = _type(a)
        if (t is _FunctionType or t is _MethodType or _type_flags(t) & _TYPE_SUBCLASS) and (
            not _trusted_callable(a)
        ):
            return False
    for a in kwargs.values():
        t = _type(a)
        if (t is _FunctionType or t is _MethodType or _type_flags(t) & _TYPE_SUBCLASS) and (
            not _trusted_callable(a)
        ):
            return False
    return True


def _after_untrusted() -> None:
    grave = _GRAVE
    builtins_dict = _builtins_module.__dict__
    if not _same_dict(builtins_dict, _PRISTINE_BUILTINS):
        builtins_dict.clear()  # first: a finalizer this runs comes before the module restores
        builtins_dict.update(_PRISTINE_BUILTINS)
    for mod, names in _AFTER_CALL:
        _restore_module(mod, names, grave)
    _quiet_gc()


def _quiet_gc() -> None:
    """No collection, and so no finalizer or gc callback of untrusted code, runs unasked
    while a check that uses standard-library code is running."""
    callbacks = _gc_callbacks
    if callbacks:
        _GRAVE.append(callbacks.copy())
        callbacks.clear()
    _gc_disable()


_SNAPSHOT: dict = {}
"""Real module -> copy of its attributes, taken before untrusted code ran."""
_MODULE_TABLE: dict = {}
"""sys.modules as the fork server left it (the real modules), built once before forking."""
_PRIVATE_BUILTINS: dict = {}
"""The builtins dict that checks run with (each job child has its own copy-on-write copy)."""
_PROTECTED: list = []
"""Globals of the checks run so far in this job child (their functions' __code__ is guarded)."""
_VIOLATIONS: list = []
"""Blocked events seen in this job child, reported in the done frame."""
_HOOK = None
"""The job child's audit hook, built by the server before forking."""
_GRAVE: list = []
"""What restores displaced in this job child, kept alive so no finalizer of untrusted code
runs while the harness restores or checks (the child ends with os._exit, running none)."""
_flush = type(sys.stdout).flush if sys.stdout is not None else None
"""The C flush of the server's text streams (the job's stdout and stderr are of that type)."""


def attr(obj, name):
    """Attribute load; on a snapshotted real module, returns the attribute it had before."""
    if _type(obj) is _ModuleType:
        saved = _SNAPSHOT.get(obj)
        if saved is not None and name in saved:
            return saved[name]
    return getattr(obj, name)


_HELPERS = {"keep": keep, "cmp": cmp, "binop": binop, "attr": attr, "call": call}


def _substitute(code: types.CodeType, table: dict, prefix: str) -> types.CodeType:
    consts = []
    for c in code.co_consts:
        if _type(c) is str and c.startswith(prefix):
            if c not in table:  # cannot happen: the check's text does not contain the prefix
                raise ValueError("check refers to an unknown helper")
            consts.append(table[c])
        elif _type(c) is types.CodeType:
            consts.append(_substitute(c, table, prefix))
        else:
            consts.append(c)
    return code.replace(co_consts=tuple(consts))


def _placeholder_prefix(source: str) -> str:
    """A prefix no string in `source` contains: 128 random bits drawn for this compile, so
    text written by the model (a prediction inside a check) can never name a helper."""
    while True:
        prefix = PLACEHOLDER + os.urandom(16).hex() + ":"
        if prefix not in source:
            return prefix


class _StripAnnotations(ast.NodeTransformer):
    """Annotations of trusted definitions are dropped: evaluating them (``List[int]``) would
    run typing's Python code, which the program may have patched, inside trusted code."""

    def _args(self, args: ast.arguments) -> None:
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                a.annotation = None

    def visit_FunctionDef(self, node):
        self._args(node.args)
        node.returns = None
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node):
        if node.value is None:
            return ast.Pass()
        return ast.copy_location(ast.Assign([node.target], node.value), node)


def compile_check(source: str, kind: str, trusted: bool = False) -> types.CodeType:
    """Rewrite + compile one check; helpers and builtins become constants of the code.
    `trusted=True` is for trusted definitions (a prompt's helpers): annotations are dropped."""
    prefix = _placeholder_prefix(source)
    tree = _checkrewrite.rewrite_check(source, kind, prefix)
    if trusted:
        tree = ast.fix_missing_locations(_StripAnnotations().visit(tree))
    with warnings.catch_warnings():  # CPython sees the helper slots (str constants) called
        warnings.simplefilter("ignore", SyntaxWarning)
        code = compile(tree, "<check>", kind, dont_inherit=True, optimize=0)
    table = {prefix + name: value for name, value in _HELPERS.items()}
    for name, value in _PRISTINE_BUILTINS.items():
        table[prefix + "b:" + name] = value
    return _substitute(code, table, prefix)


# ---------------------------------------------------------------------------------------
# Restoring what checks and trusted definitions read (modules, classes, instances).
# ---------------------------------------------------------------------------------------

_DEEP: dict = {}
"""Real module -> entries for the classes it defines, its instances with a __dict__ and its
dict/list/set values, each with a copy taken before untrusted code ran."""
_DEEP_OF: dict = {}
"""id of such a class or instance -> its entry (what ``from m import x`` hands out)."""
_type_dict = type.__dict__["__dict__"].__get__
_type_setattr = type.__setattr__
_type_delattr = type.__delattr__
_GetSetDescriptorType = types.GetSetDescriptorType
_MethodType = types.MethodType
_FunctionType = types.FunctionType


def _snapshot_deep(mod: types.ModuleType, name: str) -> None:
    """Record, in the server before any fork, what `mod`'s own classes, instances and
    containers hold, so that a check importing `mod` sees them as they were."""
    entries = []
    for key, value in list(mod.__dict__.items()):
        if key == "__builtins__":
            continue  # the builtins module's dict: restored on its own
        t = type(value)
        if isinstance(value, type):
            if not (_type_flags(value) & _HEAPTYPE) or _type_dict(value).get("__module__") != name:
                continue
            entry = ("c", value, dict(_type_dict(value)))
        elif t is dict or t is list or t is set:
            if name in ("sys", "builtins") or len(value) > 10_000:
                continue  # sys.modules & co: restored entry by entry (see _child)
            entry = ("v", value, t(value))
        elif _type_flags(t) & _HEAPTYPE and t is not types.ModuleType:
            # the C getter of the instance's __dict__, taken now: in the job child a class
            # attribute the program set could answer for `value.__dict__`
            getter = next(
                (_type_dict(k).get("__dict__") for k in t.__mro__ if "__dict__" in _type_dict(k)),
                None,
            )
            if type(getter) is not _GetSetDescriptorType:
                continue
            d = getter.__get__(value, t)
            if type(d) is not dict:
                continue
            entry = ("i", (value, getter.__get__), dict(d))
        else:
            continue
        entries.append(entry)
        _DEEP_OF[id(value)] = entry
        if entry[0] == "c":
            _TRUSTED_CLASSES.add(id(value))
    _DEEP[mod] = entries
    _TRUSTED_GLOBALS.add(id(mod.__dict__))


def _same_dict(d, saved: dict) -> bool:
    """True when `d` (a dict, or a class's mappingproxy) holds `saved`'s keys, in the same
    order, bound to the same objects. Compares identities in C (`map(operator.is_, ...)`):
    runs no untrusted code, and writes nothing, so a restore with nothing to do costs ~30 ns
    a binding. Any change (a rebinding, a key moved or added) reads as different."""
    return (
        _len(d) == _len(saved)
        and _all(_map(_is, d.keys(), saved.keys()))
        and _all(_map(_is, d.values(), saved.values()))
    )


def _same_container(obj, saved) -> bool:
    """`_same_dict` for the dict and list values of a module (a set is always restored)."""
    if _type(obj) is dict:
        return _same_dict(obj, saved)
    if _type(obj) is list and _len(obj) == _len(saved):
        return _all(_map(_is, obj, saved))
    return False


def _restore_entry(entry: tuple, grave: list) -> None:
    """Put one class, instance or container back as it was. What is displaced goes to `grave`
    (kept alive until the job ends) so that no finalizer of untrusted code runs meanwhile."""
    tag, obj, saved = entry
    if tag == "c":
        current = _type_dict(obj)
        if _same_dict(current, saved):
            return
        for key, value in saved.items():
            if _mappingproxy_get(current, key) is not value:
                grave.append(_mappingproxy_get(current, key))
                # no contextlib here: after untrusted code the harness reads no module attribute
                try:  # noqa: SIM105
                    _type_setattr(obj, key, value)
                except _BaseException:
                    pass
        if _len(current) != _len(saved):
            for key in tuple(current):
                if key not in saved:
                    grave.append(_mappingproxy_get(current, key))
                    try:  # noqa: SIM105
                        _type_delattr(obj, key)
                    except _BaseException:
                        pass
    elif tag == "i":
        d = obj[1](obj[0])
        if _type(d) is dict and not _same_dict(d, saved):
            grave.append(d.copy())
            d.clear()
            d.update(saved)
    elif not _same_container(obj, saved):
        grave.append(obj.copy())
        obj.clear()
        if _type(obj) is list:
            obj.extend(saved)
        else:
            obj.update(saved)


def _restore_module(mod: types.ModuleType, names, grave: list) -> None:
    """`mod`'s bindings as the fork server left them, and what its own classes, instances and
    containers hold (`names` None: ``import mod``); for ``from mod import names``, only what
    the imported objects hold, unless one is a Python function, method or class (its code
    reads `mod`'s globals when called: then all of it). The bindings are restored by clearing
    the dict, never by looking keys up, so no `__eq__` of a key the program planted runs."""
    saved = _SNAPSHOT.get(mod)
    if saved is None:
        return
    d = mod.__dict__
    if not _same_dict(d, saved):
        grave.append(d.copy())
        d.clear()
        d.update(saved)
    if names is not None:
        spec = _DEEP_OF.get(id(saved.get("__spec__")))  # read by every import statement
        if spec is not None:
            _restore_entry(spec, grave)
        for name in names:
            value = saved.get(name)
            t = _type(value)
            if t is _FunctionType or t is _MethodType or _isinstance(value, type):
                names = None  # its code reads the module's globals: restore all of it
                break
            entry = _DEEP_OF.get(id(value))
            if entry is not None:
                _restore_entry(entry, grave)
    if names is None:
        for entry in _DEEP.get(mod, ()):
            _restore_entry(entry, grave)


# ---------------------------------------------------------------------------------------
# The job child.
# ---------------------------------------------------------------------------------------

_FRAME_HEAD = b"%s %d %d "


def frame(mac, kind: bytes, index: int, payload: bytes) -> bytes:
    """One result frame: ``kind index length tag\\n payload``, where tag is the job's keyed
    BLAKE2b (the key never leaves the host and this process) of the head and the payload.
    Reading frames the harness wrote, or anything else in the process's descriptors, gives
    nothing that authenticates a different frame.

    >>> import hashlib
    >>> len(frame(hashlib.blake2b(key=b"k", digest_size=16), b"C", 0, b"1"))
    40
    """
    head = _FRAME_HEAD % (kind, index, _len(payload))
    m = mac.copy()
    m.update(head)
    m.update(payload)
    return head + m.hexdigest().encode("ascii") + b"\n" + payload


def _send(fd, mac, kind, index, payload):
    view = memoryview(frame(mac, kind, index, payload))
    while view:
        n = _write(fd, view)
        view = view[n:]


def _describe(exc) -> bytes:
    """Exception type name (+ message for built-in exceptions with plain args); runs no
    untrusted code."""
    try:
        t = _type(exc)
        name = _type_name(t)
        text = ""
        if _PRISTINE_BUILTINS.get(name) is t and is_plain(exc.args):
            text = str(exc)
        return (name[:80] + ": " + text[:300]).encode("utf-8", "replace")
    except _BaseException:
        return b"?"


_FRAME_ATTRS = frozenset(
    {
        "tb_frame",
        "gi_frame",
        "cr_frame",
        "ag_frame",
        "f_code",
        "f_back",
        "gi_code",
        "cr_code",
        "ag_code",
    }
)
_BLOCKED_EVENTS = frozenset(
    {
        "sys._current_frames",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "code.__new__",
        "marshal.load",
        "marshal.loads",
        "_thread.start_new_thread",
        "setopencode",
        "os.system",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.forkpty",
        "pty.spawn",
        "subprocess.Popen",
        "object.__setattr__",
        "object.__delattr__",
        "sys.addaudithook",
        "cpython.remove_audit_hooks",
    }
)
_BLOCKED_PREFIXES = ("ctypes.", "socket.", "_posixsubprocess")


def _make_hook(blocked_modules: frozenset, protected: list, violations: list):
    """The audit hook, armed before untrusted code runs; it can never be removed."""
    split = str.split

    def hook(event, args):
        if event == "exec" or event == "compile" or event == "builtins.id" or event == "open":
            return
        if event == "object.__getattr__":
            name = args[1]
            if name in _FRAME_ATTRS:
                violations.append(event + ":" + name)
                raise AttributeError("sandbox: reading " + name + " is blocked")
            if name == "__code__":
                g = getattr(args[0], "__globals__", None)
                for p in protected:
                    if g is p:
                        violations.append(event + ":__code__")
                        raise AttributeError("sandbox: reading __code__ of a check is blocked")
            return
        if event == "sys._getframe":
            violations.append(event)
            raise ValueError("sandbox: sys._getframe is blocked")
        if event == "import":
            top = split(args[0], ".")[0]
            if top in blocked_modules:
                violations.append("import:" + top)
                raise ImportError("sandbox: importing " + top + " is blocked")
            return
        if event in _BLOCKED_EVENTS or event.startswith(_BLOCKED_PREFIXES):
            violations.append(event)
            raise PermissionError("sandbox: " + event + " is blocked")

    return hook


def _lock_down_modules() -> None:
    """Signal handlers receive the interrupted frame, and a re-created builtin module would
    hand back the originals: untrusted code may do neither."""
    import _imp
    import _signal

    for name in ("signal", "set_wakeup_fd", "sigwait", "sigwaitinfo", "sigtimedwait"):
        for mod in (_signal, signal):
            if hasattr(mod, name):
                setattr(mod, name, _BLOCKER)
    _imp.create_builtin = _BLOCKER


def rlimits(limits: dict, nproc_base: int) -> tuple:
    """(resource, (soft, hard)) pairs for one job, computed by the server before forking."""
    mb = 1024 * 1024
    cpu = max(1, int(limits["cpu_s"] + 0.999))
    fsize = limits["max_output_bytes"] + 1
    nproc = nproc_base + limits["max_procs"]
    return (
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_AS, (limits["memory_mb"] * mb, limits["memory_mb"] * mb)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"])),
        (resource.RLIMIT_NPROC, (nproc, nproc)),
    )


def _child(
    req: dict,
    program: types.CodeType | bytes,
    codes: list,
    trusted: tuple | None,
    limits: tuple,
    result_fd: int,
    out_fd: int,
    settings: dict,
    mac,
) -> None:
    """Runs in the forked child. Never returns. Everything it can take ready-made from the
    server (rlimits, compiled checks, the private builtins, the audit hook, the keyed frame
    hasher) is built before the fork: each page the child writes costs a copy-on-write fault.
    `program` is the candidate's code object, or the syntax verdict when it does not compile;
    `trusted` the compiled trusted definitions (`Job.trusted`) or None."""
    try:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.dup2(result_fd, 3)
        os.closerange(4, 1 << 16)
        fd = 3
        os.chdir(settings["job_dir"])
        os.umask(0o077)
        uid = settings["uid"]
        if uid >= 0:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        setrlimit = resource.setrlimit
        for which, pair in limits:
            setrlimit(which, pair)
        if _type(program) is bytes:  # the server could not compile it
            _send(fd, mac, b"P", 0, program)
            _exit(0)
        namespace = {"__name__": "__sandbox__", "__builtins__": _builtins_module}
        if req["setup"]:
            try:
                _exec(compile(req["setup"], "<setup>", "exec", dont_inherit=True), namespace)
            except _BaseException as exc:
                _send(fd, mac, b"P", 0, b"setup:" + _describe(exc))
                _exit(0)
        setup_bindings = {k: v for k, v in namespace.items() if k != "__builtins__"}
        module_table = _MODULE_TABLE
        if _len(_sys_modules) != _len(module_table):  # setup imported modules: they are real
            for mod in list(_sys_modules.values()):
                if _type(mod) is _ModuleType and mod not in _SNAPSHOT:
                    _SNAPSHOT[mod] = dict(mod.__dict__)
                    _TRUSTED_GLOBALS.add(id(mod.__dict__))
            module_table = dict(_sys_modules)
        builtins_dict = _builtins_module.__dict__
        private_builtins = _PRIVATE_BUILTINS
        protected = _PROTECTED
        violations = _VIOLATIONS
        grave = _GRAVE
        after_call = _AFTER_CALL
        pristine_import = _PRISTINE_BUILTINS["__import__"]
        trusted_globals = _TRUSTED_GLOBALS
        _sys_modules["__main__"] = _ModuleType("__main__")
        sys.addaudithook(_HOOK)
        stdout = sys.stdout
        stderr = sys.stderr

        try:
            _exec(program, namespace)
            _send(fd, mac, b"P", 0, b"ok")
            ran = True
        except _BaseException as exc:
            _send(fd, mac, b"P", 0, b"error:" + _describe(exc))
            ran = False
        if ran:
            t_code = t_imports = t_restores = t_free = None
            if trusted is not None:
                t_code, _, t_imports, t_restores, t_free = trusted
            for i, (kind, code, err, imports, restores, free) in enumerate(codes):
                if code is None:
                    _send(fd, mac, b"C", i, b"0check does not compile: " + err)
                    continue
                if trusted is not None and t_code is None:
                    _send(fd, mac, b"C", i, b"0trusted definitions do not compile: " + trusted[1])
                    continue
                if t_code is not None:
                    imports = imports + t_imports
                    restores = restores + t_restores
                    free = free + t_free
                # The check's namespace: the program's (string) names, setup's, and the real
                # modules it names without importing. Only exact-str keys are copied, so no
                # key the program planted answers a lookup with its own __eq__.
                g = {k: v for k, v in namespace.items() if _type(k) is str}
                g.update(setup_bindings)
                plan = []
                for name, names in restores:
                    mod = module_table.get(name)
                    if _type(mod) is _ModuleType:
                        plan.append((mod, names))
                for name in free:  # a module name the check uses without importing it
                    mod = module_table.get(name)
                    if _type(mod) is _ModuleType:
                        plan.append((mod, None))
                        g[name] = mod
                        imports = imports + (name,)
                if plan:
                    _gc_collect()  # pending finalizers of the program run now, not mid-check
                if imports:  # what the check imports is the real module again
                    if any(_type(k) is not str for k in _sys_modules):
                        grave.append(_sys_modules.copy())
                        _sys_modules.clear()
                        _sys_modules.update(module_table)
                    for name in imports:
                        mod = module_table.get(name)
                        if mod is not None:
                            _sys_modules[name] = mod
                g["__builtins__"] = private_builtins
                protected.append(g)
                trusted_failed = None
                if t_code is not None:  # rewritten like a check: immune to what it imports
                    defs = {"__name__": "__sandbox__", "__builtins__": private_builtins}
                    protected.append(defs)
                    trusted_globals.add(id(defs))
                    try:
                        _exec(t_code, defs)
                    except _BaseException as exc:
                        trusted_failed = exc
                    for name, value in defs.items():
                        if name != "__builtins__":
                            g[name] = value
                # Last, builtins and the modules the check reads, as the server left them,
                # whatever ran until now. Checks (and trusted definitions) read builtins as
                # constants; only standard-library Python code (the import system included)
                # reads the builtins module, so a check that imports and names no module
                # skips this: each page the child writes costs it a copy-on-write fault.
                # Builtins go first: a finalizer that their restore runs comes before the
                # module restores; the private dict gives import statements the real
                # __import__.
                if (imports or plan) and not _same_dict(builtins_dict, _PRISTINE_BUILTINS):
                    builtins_dict.clear()
                    builtins_dict.update(_PRISTINE_BUILTINS)
                    private_builtins["__import__"] = pristine_import
                if plan:
                    for mod, names in plan:
                        _restore_module(mod, names, grave)
                    _quiet_gc()
                    after_call[:] = plan
                    trusted_globals.add(id(g))
                elif after_call:
                    after_call.clear()
                try:
                    if trusted_failed is not None:
                        raise trusted_failed
                    if kind == "exec":
                        _exec(code, g)
                        payload = b"1"
                    else:
                        value = _eval(code, g)
                        text = _repr(value)
                        if _len(text) > settings["max_value_chars"]:
                            payload = b"0value repr too long"
                        else:
                            payload = b"1" + text.encode("utf-8", "surrogatepass")
                except _BaseException as exc:
                    payload = b"0" + _describe(exc)
                _send(fd, mac, b"C", i, payload)
        try:  # the real streams' own (C) flush, never an attribute the program may have set
            _flush(stdout)
            _flush(stderr)
        except _BaseException:
            pass
        _send(fd, mac, b"D", 0, ";".join(violations[:20]).encode("utf-8", "replace"))
    except _BaseException:
        _exit(70)
    _exit(0)


# ---------------------------------------------------------------------------------------
# The server loop.
# ---------------------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        data = os.read(fd, min(n, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def _read_msg(fd: int):
    head = _read_exact(fd, 8)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack("<Q", head)[0])
    return None if body is None else pickle.loads(body)


def _write_msg(fd: int, obj) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(struct.pack("<Q", len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def _kill_leftovers(settings: dict, child: int) -> int:
    """SIGKILL every process left by the job; returns how many rounds it took."""
    if settings["pidns"]:
        for rounds in range(1, 2001):
            try:
                os.kill(-1, signal.SIGKILL)  # everything in our pid namespace but init and us
            except ProcessLookupError:
                return rounds
            time.sleep(0.001)
        return -1
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child, signal.SIGKILL)
    return 1


def _compile_one(source: str, kind: str, trusted: bool = False) -> tuple:
    """(kind, code, error, sys.modules names to restore, (module, names) restores, free
    module names) for one check or trusted definitions; code None (with the reason) when it
    does not compile. Never raises: a check that breaks the rewriter fails alone."""
    try:
        tree = ast.parse(source, mode="eval" if kind == "eval" else "exec")
        imports = _checkrewrite.imported_modules(tree)
        restores = _checkrewrite.restored_modules(tree)
        free = tuple(
            n
            for n in _checkrewrite.free_names(tree)
            if type(_MODULE_TABLE.get(n)) is types.ModuleType
        )
        return (kind, compile_check(source, kind, trusted), b"", imports, restores, free)
    except Exception as exc:  # SyntaxError, RecursionError, MemoryError, ValueError...
        return (kind, None, _describe(exc), (), (), ())


def _cached(cache: dict, source: str, kind: str, limit: int, trusted: bool = False) -> tuple:
    key = (kind, source, trusted)
    hit = cache.get(key)
    if hit is None:
        hit = _compile_one(source, kind, trusted)
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = hit
    return hit


def _compiled(cache: dict, checks, limit: int) -> list:
    return [_cached(cache, code, kind, limit) for code, kind in checks]


def _compiled_trusted(cache: dict, source: str, limit: int) -> tuple | None:
    """The trusted definitions compiled like a check (code, error, imports, restores, free)."""
    if not source:
        return None
    return _cached(cache, source, "exec", limit, True)[1:]


def _drain(r: int, buf: bytearray, limit: int) -> bool:
    """Append what the (non-blocking) result pipe holds to `buf`; True when over `limit`."""
    while True:
        try:
            data = os.read(r, 1 << 20)
        except BlockingIOError:
            return False
        if not data:
            return False
        buf += data
        if len(buf) > limit:
            return True


def _compile_program(source: str) -> types.CodeType | bytes:
    """The candidate's program compiled by the server (compiling runs none of it; the server
    already compiles untrusted checks), or the syntax verdict. Done before the fork because
    the compiler writes many pages, and each page a job child writes costs it a fault."""
    try:
        return compile(source, "<candidate>", "exec", dont_inherit=True, optimize=0)
    except _BaseException as exc:  # SyntaxError, ValueError (null bytes), MemoryError...
        return b"syntax:" + _describe(exc)


def _run_job(req: dict, settings: dict, cache: dict, out_fd: int) -> dict:
    codes = _compiled(cache, req["checks"], settings["cache_size"])
    trusted = _compiled_trusted(cache, req.get("trusted", ""), settings["cache_size"])
    mac = _blake2b(key=req.pop("key"), digest_size=16)
    program = _compile_program(req["program"])
    limits = req["limits"]
    job_limits = rlimits(limits, settings["nproc_base"])
    job_dir = settings["job_dir"]
    try:
        os.mkdir(job_dir, 0o700)
    except FileExistsError:  # a previous job's directory could not be removed: start clean
        shutil.rmtree(job_dir, ignore_errors=True)
        os.mkdir(job_dir, 0o700)
    if settings["uid"] >= 0:
        os.chown(job_dir, settings["uid"], settings["uid"])
    os.ftruncate(out_fd, 0)
    os.lseek(out_fd, 0, os.SEEK_SET)
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # room for every frame, so the child rarely waits on us
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, settings["result_pipe_bytes"])
    os.set_blocking(r, False)
    gc.freeze()  # the child's collections never walk (and so never copy) the server's objects
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if not settings["pidns"]:
                os.setpgid(0, 0)
            _child(req, program, codes, trusted, job_limits, w, out_fd, settings, mac)
        finally:
            _exit(71)
    os.close(w)
    del program, mac
    pidfd = os.pidfd_open(pid)
    deadline = start + limits["wall_s"]
    buf = bytearray()
    max_result = settings["max_result_bytes"]
    poll_s = settings["result_poll_s"]
    timed_out = overflow = False
    # Wait on the child's exit only; frames wait in the pipe and are drained on each wake-up
    # (every result_poll_s at most), so a job costs one wake-up instead of one per frame.
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([pidfd], [], [], min(remaining, poll_s))
        if _drain(r, buf, max_result):
            overflow = True
            break
        if ready:
            break
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    duration = time.monotonic() - start
    rounds = _kill_leftovers(settings, pid)
    if not overflow:
        overflow = _drain(r, buf, max_result)
    os.close(r)
    os.close(pidfd)
    out_size = os.fstat(out_fd).st_size
    os.lseek(out_fd, 0, os.SEEK_SET)
    output = os.read(out_fd, min(out_size, limits["max_output_bytes"]))
    try:
        os.rmdir(job_dir)
    except OSError:  # the job left files behind
        shutil.rmtree(job_dir, ignore_errors=True)
    return {
        "frames": bytes(buf),
        "overflow": overflow,
        "timed_out": timed_out,
        "exit_code": os.waitstatus_to_exitcode(status),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "minflt": usage.ru_minflt,
        "output": output,
        "output_size": out_size,
        "duration_s": duration,
        "kill_rounds": rounds,
    }


def _server_error(exc: BaseException) -> dict:
    """The answer for a job the server itself failed on (no frames: the host reads crashed)."""
    return {
        "frames": b"", "overflow": False, "timed_out": False, "exit_code": 70, "cpu_s": 0.0,
        "minflt": 0, "output": b"", "output_size": 0, "duration_s": 0.0, "kill_rounds": 1,
        "server_error": _describe(exc).decode("utf-8", "replace"),
    }  # fmt: skip


def _register_at_fork_but_reseed(**hooks) -> None:
    """`os.register_at_fork` while the server preloads modules, minus `random`'s reseed of
    its global generator in every child: that reseed costs each job ~45 page faults (a third
    of the fork path), and jobs start from one fixed state instead (see `_prepare_server`)."""
    child = hooks.get("after_in_child")
    if getattr(child, "__qualname__", "") == "Random.seed":
        hooks.pop("after_in_child")
        if not hooks:
            return
    _register_at_fork(**hooks)


def _warm_helpers() -> None:
    """Run the helpers that checks call until CPython 3.11 has specialised their bytecode: the
    warm-up counters and inline caches then live, already written, in the server's pages
    instead of being written (one copy-on-write fault per page) by every job child."""
    for _ in range(64):
        is_plain([1, (2.0, "a"), {"k": {None, b"x"}}, frozenset({True})])
        keep((1, 2))
        cmp(1, ("Eq",), 1)
        cmp([1], ("Eq", "Lt"), [1], [2])
        binop("Add", 1, 2)
        call(len, [1, 2])
        call(sorted, (3, 1))
        attr(os, "sep")
        _describe(ValueError("x"))


def _prepare_server(settings: dict) -> None:
    """Everything the job child would otherwise redo on every fork, done once before forking."""
    global _MODULE_TABLE, _HOOK
    warnings.simplefilter("ignore")  # untrusted programs compiled here, run in the children
    os.register_at_fork = _register_at_fork_but_reseed
    try:
        for name in (*sys.builtin_module_names, *settings["preload"]):
            with contextlib.suppress(ImportError):
                __import__(name)
    finally:
        os.register_at_fork = _register_at_fork
    if "random" in sys.modules:  # every job starts from this state: the same job, the same run
        sys.modules["random"].seed(settings["random_seed"])
    _warm_helpers()
    _lock_down_modules()  # the server itself never needs signal handlers or new builtins
    # Imports inside jobs compile the standard library from source instead of unmarshalling
    # cached .pyc files: marshal.loads stays blocked for everyone (see docs/SANDBOX.md).
    sys.implementation.cache_tag = None
    sys.dont_write_bytecode = True
    # Snapshots last: a restore must put back the locked-down modules, never the originals.
    for name, mod in list(sys.modules.items()):
        if type(mod) is types.ModuleType:
            _SNAPSHOT[mod] = dict(mod.__dict__)
            _snapshot_deep(mod, name)
    _MODULE_TABLE = dict(sys.modules)
    _PRIVATE_BUILTINS.update(_PRISTINE_BUILTINS)
    _HOOK = _make_hook(frozenset(settings["blocked_modules"]), _PROTECTED, _VIOLATIONS)
    gc.freeze()


def serve(settings: dict) -> None:
    """Answer batches of job requests on fd 0 (one answer per job on fd 1) until EOF."""
    _prepare_server(settings)
    os.makedirs(os.path.dirname(settings["out_path"]), exist_ok=True)
    out_fd = os.open(settings["out_path"], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    cache: dict = {}
    _write_msg(1, {"ready": os.getpid()})
    while True:
        batch = _read_msg(0)
        if batch is None:
            return
        for req in batch["jobs"]:
            try:
                answer = _run_job(req, settings, cache, out_fd)
            except Exception as exc:  # one job the server could not run: the others still run
                answer = _server_error(exc)
            _write_msg(1, answer)


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
