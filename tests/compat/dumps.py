"""Comparing canonical dumps from graph_tool.py, with short failure messages.

Owns how two dumps are compared and how a difference is described: full
dumps are megabytes, so a failure names the first differing oid and shows
both versions of that one object, never the whole dump.
"""

from __future__ import annotations

import json

import pytest


def first_divergence(left, right, path: str = "") -> tuple[str, object, object]:
    """The path to the first place where two JSON values differ, and both values there."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                return first_divergence(left.get(key), right.get(key), f"{path}.{key}")
    if isinstance(left, list) and isinstance(right, list):
        for index, (mine, theirs) in enumerate(zip(left, right, strict=False)):
            if mine != theirs:
                return first_divergence(mine, theirs, f"{path}[{index}]")
        if len(left) != len(right):
            return f"{path} (length {len(left)} vs {len(right)})", left[-3:], right[-3:]
    return path or "(top)", left, right


def first_difference(left: dict, right: dict) -> str:
    """A short description of where two dumps first differ (full dumps are megabytes)."""
    left_objects, right_objects = left["objects"], right["objects"]
    only_left = sorted(set(left_objects) - set(right_objects), key=int)[:10]
    only_right = sorted(set(right_objects) - set(left_objects), key=int)[:10]
    if only_left or only_right:
        return f"oids only on the left: {only_left}; only on the right: {only_right}"
    for oid in sorted(left_objects, key=int):
        if left_objects[oid] != right_objects[oid]:
            path, mine, theirs = first_divergence(left_objects[oid], right_objects[oid])
            return (
                f"oid {oid} ({left_objects[oid].get('class')}) differs at {path}:\n"
                f" left:  {json.dumps(mine)[:600]}\n right: {json.dumps(theirs)[:600]}"
            )
    return f"loadable oids differ: {left['loadable'][:50]} vs {right['loadable'][:50]}"


def assert_same_dump(left: dict, right: dict, what: str) -> None:
    if left != right:
        pytest.fail(f"{what}: {first_difference(left, right)}", pytrace=False)


def assert_packed(dump: dict, what: str) -> None:
    """After a pack only reachable records remain."""
    reachable = sorted(int(oid) for oid in dump["objects"])
    assert dump["loadable"] == reachable, f"{what}: unreachable records survived the pack"
