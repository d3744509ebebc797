"""Configuration errors as one line: jsonargparse's nested reports condensed to the full dotted
option, the value received, what is allowed (``null`` included where it is), and a "did you mean"
for a misspelled option or class name."""

from __future__ import annotations

import difflib
import re
from typing import Iterable, Mapping, Sequence

#: How a type of jsonargparse's report reads in a message.
TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "NoneType": "null",
    "dict": "a mapping",
    "list": "a list",
}
_SKIP = re.compile(
    r"(Problem with given class_path|Does not validate|Subtypes|Errors|Given value|Expected a <class 'NoneType'>"
    r"|Expected a path but)"
)


def _option_in(argv: Sequence[str], field: str) -> tuple[str, str] | None:
    """``(option, value)`` of the command-line flag whose dotted name ends with ``field``, e.g.
    ``("data.batch_size", "ten")`` for field ``batch_size`` and ``--data.batch_size ten``."""
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg[2:].partition("=")
        if name == field or name.endswith("." + field):
            return name, value if sep else (argv[i + 1] if i + 1 < len(argv) else "")
    return None


def _suggestion(word: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(names)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _expected(message: str, reason: str) -> str | None:
    """ "an integer or null" from the ``Subtypes: [<class 'int'>, <class 'NoneType'>]`` of the innermost
    field of a report (the one after its last ``Parser key``), else the type the reason names."""
    innermost = message[message.rfind('Parser key "') :] if 'Parser key "' in message else message
    subtypes = re.search(r"Subtypes: \[(.*)\]", innermost)
    found = re.findall(r"<class '([\w.]+)'>", subtypes.group(1) if subtypes else reason)
    words = [TYPE_WORDS.get(name.rsplit(".", 1)[-1], name) for name in dict.fromkeys(found)]
    return " or ".join(words) if words else None


def condense_error(message: str, argv: Sequence[str] = (), choices: Mapping[str, Iterable[str]] | None = None) -> str:
    r"""One line from jsonargparse's nested error report.

    ``argv`` (the command line) gives the full dotted option and the value as typed; ``choices``
    maps an option group (``"model"``, ``"model.net"``, ``"data"``, ``"trainer"``; ``"class"`` for
    class names) to the names it accepts, for a "did you mean".

    >>> condense_error('Parser key "model":\n  Problem with given class_path \'M\':\n    Parser key "width":\n      Expected a <class \'int\'>. Got value: x')
    "model.width: expected an integer but got 'x'"
    >>> condense_error('Parser key "config": File does not exist: \'/x/c.yaml\'')
    "config: File does not exist: '/x/c.yaml'"
    >>> report = ('Parser key "batch_size":\n  Does not validate against any of the Union subtypes\n'
    ...           "  Subtypes: [<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n"
    ...           "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: ten")
    >>> condense_error(report, ["--data.batch_size", "ten"])
    "data.batch_size: expected an integer or null but got 'ten'"
    >>> condense_error("Expected argument `n_train` to be a positive integer but got -5", ["--data.n_train", "-5"])
    'data.n_train: Expected argument `n_train` to be a positive integer but got -5'
    >>> condense_error("Option 'lrr' is not accepted", ["--model.lrr", "0.1"], {"model": ["lr", "momentum"]})
    "model.lrr: no such option (got '0.1'); did you mean model.lr?"
    """
    path: list[str] = []
    reason = ""
    for line in message.splitlines():
        text = line.strip().lstrip("- ").strip()
        key = re.match(r'Parser key "([^"]+)":?\s*(.*)', text)
        if key:
            path.append(key.group(1))
            if key.group(2):  # the reason on the same line, e.g. 'File does not exist: ...'
                reason = key.group(2)
        elif text and not _SKIP.match(text):
            reason = reason if reason.startswith("Expected argument") else text
    choices = choices or {}
    reason = reason or message.strip()
    argument = re.match(r"Expected argument `(\w+)`", reason)
    if not path and argument:  # a class's own check: name the option as it was typed, if it was
        typed = _option_in(argv, argument.group(1))
        return f"{typed[0]}: {reason}" if typed else reason
    field = ".".join(dict.fromkeys(".".join(path).split("."))) if path else ""
    given = re.search(r"(?:Given value|Got value): (.*)$", message, re.MULTILINE)
    typed = _option_in(argv, field) if field else None
    if typed:
        field = typed[0]
    value = typed[1] if typed else (given.group(1).strip() if given else None)

    unknown = re.match(r"Option '([^']+)' is not accepted", reason or message.strip())
    if unknown:
        typed = _option_in(argv, unknown.group(1))
        option = typed[0] if typed else unknown.group(1)
        group = option.rsplit(".", 1)[0] if "." in option else ""
        hint = _suggestion(option.rsplit(".", 1)[-1], choices.get(group, ()))
        hint = hint.replace("did you mean ", f"did you mean {group}.") if group and hint else hint
        got = f" (got {typed[1]!r})" if typed and typed[1] else ""
        return f"{option}: no such option{got}{hint}"

    literal = re.match(r"Expected a typing.Literal\[(.*)\]\. Got value: (.*)", reason)
    missing_class = re.search(r"(?:Expected a dot import path string: (\S+)|has no attribute '(\w+)')", reason)
    if literal:
        allowed = ", ".join(v.strip().strip("'") for v in literal.group(1).split(","))
        reason = f"expected one of {allowed} but got {literal.group(2)!r}"
    elif missing_class:
        name = missing_class.group(1) or missing_class.group(2)
        reason = f"no class {name!r} among the suite's {field or 'classes'}{_suggestion(name.rsplit('.', 1)[-1], choices.get('class', ()))}"
    elif re.fullmatch(r"Expected a <class '[\w.]+'>(\. Got value: .*)?", reason) and value is not None:
        reason = f"expected {_expected(message, reason)} but got {value!r}"
    return f"{field}: {reason}" if field else reason or message.strip().splitlines()[0]
