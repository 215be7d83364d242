"""A pickle reader that builds plain values and calls only what it is given.

Python's `pickle` runs whatever callables a file names, and its opcodes can
also set attributes on the objects they reach (`BUILD`), so an allow-list
in `find_class` alone leaves the allowed objects themselves open to change:
a file could rewrite a shared object that every later load relies on. This
reader is a small stack machine over `pickletools.genops` instead. It makes
numbers, strings, bytes, tuples, lists, dicts and sets itself; a global is
looked up in the caller's table and may only be called (`REDUCE`) when it is
a `Rebuild`; `BUILD` reaches only objects this load made, through the
caller's `build` hook; every other opcode that makes or changes objects
(`INST`, `OBJ`, `NEWOBJ`, extensions, out-of-band buffers) is refused.
torch's own `weights_only` unpickler follows the same rules.

Callers give one fresh table per load (`Rebuild` values and frozen
markers), so nothing one file does can outlive its load. Before building,
they scan: `referenced_globals` lists every global a pickle names, read off
its opcodes without building anything.
"""

import dataclasses
import io
import pickletools
from collections.abc import Callable

_SHOWN_CHARACTERS = 60


def shown(value) -> str:
    """A value from an untrusted pickle, for a message: a scalar's repr
    (cut short), else only its type. Never the repr of a container: one
    holding another twice, forty levels deep, prints 2**40 items."""
    if isinstance(value, str | bytes | int | float | bool | type(None)):
        text = repr(value)
        if len(text) > _SHOWN_CHARACTERS:
            text = text[: _SHOWN_CHARACTERS - 3] + "..."
        return text
    return f"a {type(value).__name__}"


class RefusedError(Exception):
    """The pickle asks for something a file of plain values never needs."""


class MalformedError(Exception):
    """The bytes are not a complete, well-formed pickle."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rebuild:
    """A global the pickle may call: `function(*args)` makes a new object."""

    function: Callable
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Marker:
    """A global the pickle may name but never call (e.g. `torch.Tensor`)."""

    name: str


_MARK = object()
_KEY_TYPES = (str, int, float, bool, bytes, type(None))
_PLAIN_PUSHES = {
    "NONE": lambda _: None,
    "NEWTRUE": lambda _: True,
    "NEWFALSE": lambda _: False,
    "EMPTY_TUPLE": lambda _: (),
    "EMPTY_LIST": lambda _: [],
    "EMPTY_DICT": lambda _: {},
    "EMPTY_SET": lambda _: set(),
}
# Opcodes whose argument is the value itself (genops decodes it).
_VALUE_OPCODES = {
    "INT",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG",
    "LONG1",
    "LONG4",
    "FLOAT",
    "BINFLOAT",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_IGNORED = {"PROTO", "FRAME"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


class _Machine:
    def __init__(self, *, find_class, persistent_load, build):
        self.find_class = find_class
        self.persistent_load = persistent_load
        self.build = build
        self.stack, self.memo = [], {}
        # Objects REDUCE made in this load: the only ones BUILD may reach.
        self.made = {}

    def pop_mark(self):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index] is _MARK:
                items = self.stack[index + 1 :]
                del self.stack[index:]
                return items
        raise MalformedError("no MARK on the stack")

    def pop(self, count=1):
        if len(self.stack) < count or any(
            item is _MARK for item in self.stack[-count:]
        ):
            raise MalformedError("the stack is shorter than an opcode needs")
        items = self.stack[-count:]
        del self.stack[-count:]
        return items

    def top(self):
        if not self.stack or self.stack[-1] is _MARK:
            raise MalformedError("an opcode found no object on the stack")
        return self.stack[-1]

    def step(self, name, argument):  # noqa: C901 (one branch per opcode)
        stack = self.stack
        if name in _IGNORED:
            return
        if name in _VALUE_OPCODES:
            value = bytes(argument) if name == "BYTEARRAY8" else argument
            stack.append(value)
        elif name in _PLAIN_PUSHES:
            stack.append(_PLAIN_PUSHES[name](argument))
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            stack.append(self.top())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            stack.append(tuple(self.pop(int(name[-1]))))
        elif name == "TUPLE":
            stack.append(tuple(self.pop_mark()))
        elif name == "LIST":
            stack.append(self.pop_mark())
        elif name == "DICT":
            items = self.pop_mark()
            keys = self.keys(items[::2])
            stack.append(dict(zip(keys, items[1::2], strict=True)))
        elif name == "FROZENSET":
            stack.append(frozenset(self.keys(self.pop_mark())))
        elif name == "APPEND":
            (item,) = self.pop()
            self.container(list).append(item)
        elif name == "APPENDS":
            items = self.pop_mark()
            self.container(list).extend(items)
        elif name == "ADDITEMS":
            items = self.keys(self.pop_mark())
            self.container(set).update(items)
        elif name == "SETITEM":
            key, value = self.pop(2)
            self.container(dict)[self.keys([key])[0]] = value
        elif name == "SETITEMS":
            items = self.pop_mark()
            if len(items) % 2:
                raise MalformedError("SETITEMS with an odd number of items")
            target = self.container(dict)
            keys = self.keys(items[::2])
            for key, value in zip(keys, items[1::2], strict=True):
                target[key] = value
        elif name in _MEMO_PUTS:
            self.memo[argument] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in _MEMO_GETS:
            if argument not in self.memo:
                raise MalformedError(
                    f"memo key {shown(argument)} was never set"
                )
            stack.append(self.memo[argument])
        elif name == "GLOBAL":
            module, _, attribute = argument.partition(" ")
            stack.append(self.find_class(module, attribute))
        elif name == "STACK_GLOBAL":
            module, attribute = self.pop(2)
            if not (isinstance(module, str) and isinstance(attribute, str)):
                raise RefusedError("a global with a computed name")
            stack.append(self.find_class(module, attribute))
        elif name == "REDUCE":
            function, arguments = self.pop(2)
            stack.append(self.call(function, arguments))
        elif name == "BUILD":
            (state,) = self.pop()
            target = self.top()
            if id(target) not in self.made:
                raise RefusedError(
                    f"setting the state of {type(target).__name__} "
                    "(a pickle BUILD on an object it did not make)"
                )
            self.build(target, state)
        elif name in ("BINPERSID", "PERSID"):
            (pid,) = self.pop() if name == "BINPERSID" else (argument,)
            stack.append(self.persistent_load(pid))
        else:  # INST, OBJ, NEWOBJ(_EX), EXT1/2/4, NEXT_BUFFER, ...
            raise RefusedError(f"the pickle opcode {name}")

    @staticmethod
    def keys(items):
        """Dict keys and set members must be plain scalars: hashing a
        tuple that holds another twice, thirty levels deep, takes 2**30
        steps (a few hundred bytes of pickle would hang the reader)."""
        for item in items:
            if not isinstance(item, _KEY_TYPES):
                raise RefusedError(
                    f"a dict key or set member of type {type(item).__name__}"
                )
        return items

    def container(self, kind):
        target = self.top()
        if not isinstance(target, kind):
            raise RefusedError(
                f"adding items to {type(target).__name__} (expected a "
                f"{kind.__name__})"
            )
        return target

    def call(self, function, arguments):
        if not isinstance(function, Rebuild):
            raise RefusedError(
                f"calling {getattr(function, 'name', type(function).__name__)}"
            )
        if not isinstance(arguments, tuple):
            raise MalformedError(f"{function.name} called without a tuple")
        made = function.function(*arguments)
        self.made[id(made)] = made  # kept alive, so the id stays unique
        return made


def referenced_globals(data) -> list:
    """The dotted names of every global the pickle refers to, and the
    opcodes that make objects without one (refused whatever they name).

    GLOBAL and INST carry their name; STACK_GLOBAL takes it from the two
    strings pushed just before it (directly or from the memo). A name that
    cannot be read off the opcodes is reported as computed, and refused.
    """
    found, memo = [], {}
    previous = None  # the string the last pushing opcode pushed, or None
    strings = []  # strings pushed by consecutive opcodes, most recent last
    for opcode, argument, _ in pickletools.genops(data):
        name = opcode.name
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else argument] = previous
            continue
        if name in ("GLOBAL", "INST"):
            found.append(argument.replace(" ", "."))
        elif name == "STACK_GLOBAL":
            found.append(
                ".".join(strings[-2:])
                if len(strings) >= 2
                else "<a global with a computed name>"
            )
        elif name in ("EXT1", "EXT2", "EXT4", "OBJ", "NEWOBJ", "NEWOBJ_EX"):
            found.append(f"<{name} opcode>")
        if name.endswith("UNICODE") or name.endswith("UNICODE8"):
            previous = argument
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            previous = memo.get(argument)
        else:
            previous = None
        strings = [*strings[-1:], previous] if previous is not None else []
    return found


def load(data, *, find_class, persistent_load=None, build=None):
    """The object the pickle `data` describes, built by the rules above.

    Args:
        data: bytes. One pickle.
        find_class: fn(module, name) -> a `Rebuild`, a `Marker` or a plain
            value; raises RefusedError for names not allowed.
        persistent_load: fn(pid) -> object, or None to refuse persistent
            ids.
        build: fn(target, state), or None to refuse BUILD: applies a state
            to an object this load made (the hook refuses what it does not
            know).

    Raises:
        RefusedError: for an opcode, global or call the rules refuse.
        MalformedError: for bytes that are not a well-formed pickle.
    """

    def refuse_persistent(pid):
        raise RefusedError(f"a persistent object ({shown(pid)})")

    def refuse_build(target, state):
        raise RefusedError(f"setting the state of {type(target).__name__}")

    machine = _Machine(
        find_class=find_class,
        persistent_load=persistent_load or refuse_persistent,
        build=build or refuse_build,
    )
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "STOP":
                (result,) = machine.pop()
                if machine.stack:
                    raise MalformedError("objects left on the stack at STOP")
                return result
            machine.step(opcode.name, argument)
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        EOFError,
        OverflowError,
    ) as err:
        # genops on junk, an unhashable key, a rebuild given wrong arguments.
        raise MalformedError(f"{type(err).__name__}: {err}") from err
    except RecursionError as err:
        raise RefusedError("objects nested thousands deep") from err
    raise MalformedError("a pickle without its STOP opcode")
