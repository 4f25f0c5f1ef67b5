"""Reading a label out of a model's answer: JSON first, then free text.

A constrained answer is a JSON object such as ``{"reasoning": "...", "verdict": "refused"}``.
When the server ignored the constraint the answer is searched, in this order, for: a JSON object
holding the field; a line ``<field>: <option>``; the last option word in the text (the answer
comes after the reasoning). Matching is case-insensitive, except that single capital letters
(``A``/``B``) are matched as capitals in free text, where ``a`` is an article; aliases map other
words onto an option (``comply`` -> ``complied``). ``None`` means the answer holds no option.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def json_schema(field: str, options: Sequence[str], reasoning_chars: int | None) -> dict[str, Any]:
    """A schema for ``{"reasoning": <short text>, <field>: <one of options>}``, in that order,
    so that the model writes its reasoning before it commits to an answer; without
    `reasoning_chars`, just ``{<field>: <one of options>}``."""
    properties: dict[str, Any] = {}
    if reasoning_chars is not None:
        properties["reasoning"] = {"type": "string", "maxLength": reasoning_chars}
    properties[field] = {"type": "string", "enum": list(options)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def response_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``response_format`` for `schema` in the server's dialect (see
    :class:`~dial.judge.base.JudgeConfig`'s ``response_format``); ``None`` for ``"none"``."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    if kind == "none":
        return None
    raise ValueError(f"unknown response format {kind!r}")


def parse_option(
    text: str,
    field: str,
    options: Sequence[str],
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """The option `text` answers with, or ``None`` when it names none."""
    lookup = {o.lower(): o for o in options}
    lookup.update({a.lower(): o for a, o in (aliases or {}).items()})

    def resolve(value: Any) -> str | None:
        return lookup.get(str(value).strip().strip(".").lower()) if value is not None else None

    for candidate in (text, *_OBJECT.findall(text)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and resolve(data.get(field)) is not None:
            return resolve(data.get(field))
    letters = all(len(o) == 1 and o.isupper() for o in options)
    case = 0 if letters else re.IGNORECASE  # in free text "A" is an answer, "a" an article
    spellings = [*options, *(aliases or {})]
    words = "|".join(re.escape(w) for w in sorted(spellings, key=len, reverse=True))
    after = r"(?![\w.]*\w)"  # the option ends here ("3." ends, "3.5" and "Ants" do not)
    labelled = re.findall(
        rf"\b{re.escape(field)}\b\W{{0,4}}({words}){after}", text, flags=re.IGNORECASE
    )
    if labelled:
        return resolve(labelled[-1])
    found = re.findall(rf"(?<![\w.])({words}){after}", text, flags=case)
    return resolve(found[-1]) if found else None
