"""Configuration errors as one line: jsonargparse's nested reports condensed to the dotted field and its reason."""

from __future__ import annotations

import re


def condense_error(message: str) -> str:
    r"""One line from jsonargparse's nested error report: the dotted field path and the deepest reason.

    >>> condense_error('Parser key "model":\n  Problem with given class_path \'M\':\n    Parser key "width":\n      Expected a <class \'int\'>. Got value: x')
    "model.width: Expected a <class 'int'>. Got value: x"
    >>> condense_error('Parser key "config": File does not exist: \'/x/c.yaml\'')
    "config: File does not exist: '/x/c.yaml'"
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
        elif text and not re.match(r"(Problem with given class_path|Does not validate|Subtypes|Errors|Given value|Expected a <class 'NoneType'>)", text):
            reason = reason if reason.startswith("Expected argument") else text
    literal = re.match(r"Expected a typing.Literal\[(.*)\]\. Got value: (.*)", reason)
    if literal:
        allowed = ", ".join(v.strip().strip("'") for v in literal.group(1).split(","))
        reason = f"expected one of {allowed} but got {literal.group(2)!r}"
    field = ".".join(dict.fromkeys(".".join(path).split(".")))
    return f"{field}: {reason}" if field else reason or message.strip().splitlines()[0]

