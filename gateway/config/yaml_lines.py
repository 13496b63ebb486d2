"""Safe YAML loading that remembers the line of every mapping key and every value.

`load_yaml(text)` returns plain Python data in which mappings are `MarkedMap`
(a dict with `line`, `key_lines`, `value_lines`, `duplicates`) and sequences are
`MarkedSeq` (a list with `line`, `item_lines`); scalars are the usual safe-YAML
values. Mapping keys are always the key's text as written, so `on:` or `1:` are
the strings "on" and "1", never a bool or an int.

Anchors and aliases are allowed, but the document is capped in bytes, in
nesting depth and in node count *after* alias expansion, so a "billion laughs"
document is refused before anything walks it; recursive aliases are refused.
Duplicate keys are recorded with both lines (`MarkedMap.duplicates`) rather than
silently resolved; the validator reports them with their key path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DOCUMENT_BYTES = 1 << 20  # 1 MiB: a gateway config is a few KiB
MAX_NODES = 100_000  # counted with every alias expanded
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class YamlProblem:
    """A document that cannot be read as YAML at all; `line` is 1-based when known."""

    line: int | None
    message: str


class YamlError(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        self.problem = problem
        super().__init__(problem.message)


@dataclass(frozen=True, slots=True)
class Duplicate:
    key: str
    first_line: int
    line: int


class MarkedMap(dict[str, Any]):
    """A YAML mapping with the 1-based line of the mapping, of each key and of each value."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}
        self.value_lines: dict[str, int] = {}
        self.duplicates: list[Duplicate] = []


class MarkedSeq(list[Any]):
    """A YAML sequence with the 1-based line of the sequence and of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers and report duplicate keys."""

    def construct_marked_map(self, node: MappingNode) -> Iterator[MarkedMap]:
        data = MarkedMap(_line(node))
        yield data  # an empty shell first, as SafeConstructor does, so aliases can refer to it
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = str(key_node.value)
                if key in seen:
                    data.duplicates.append(Duplicate(key, seen[key], _line(key_node)))
                else:
                    seen[key] = _line(key_node)
        # `<<: *anchor` merge keys: explicit keys override merged ones (not a duplicate).
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain strings", key_node.start_mark
                )
            key = str(key_node.value)
            if key in data and any(d.key == key for d in data.duplicates):
                continue  # keep the first of explicit duplicates; the duplicate is reported
            data[key] = self.construct_object(value_node, deep=True)
            data.key_lines[key] = _line(key_node)
            data.value_lines[key] = _line(value_node)

    def construct_marked_seq(self, node: SequenceNode) -> Iterator[MarkedSeq]:
        data = MarkedSeq(_line(node))
        yield data
        for item in node.value:
            data.append(self.construct_object(item, deep=True))
            data.item_lines.append(_line(item))


LineLoader.add_constructor("tag:yaml.org,2002:map", LineLoader.construct_marked_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", LineLoader.construct_marked_seq)


def _check_size(root: Node) -> None:
    """Count nodes with aliases expanded (memoized, so linear in the graph) and refuse cycles."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Node, depth: int) -> int:
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in on_path:
            raise YamlError(YamlProblem(_line(node), "recursive alias: a node may not contain itself"))
        if depth > MAX_DEPTH:
            raise YamlError(YamlProblem(_line(node), f"nesting deeper than {MAX_DEPTH} levels"))
        on_path.add(ident)
        total = 1
        if isinstance(node, SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                total += size(key, depth + 1) + size(value, depth + 1)
        on_path.discard(ident)
        if total > MAX_NODES:
            raise YamlError(
                YamlProblem(_line(node), f"document too large: more than {MAX_NODES} nodes once aliases are expanded")
            )
        sizes[ident] = total
        return total

    size(root, 0)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raise YamlError (with a line when known) if it is not usable.

    An empty document gives None.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise YamlError(YamlProblem(None, f"document larger than {MAX_DOCUMENT_BYTES} bytes"))
    loader: LineLoader | None = None
    try:
        loader = LineLoader(text)  # the reader checks every character here
        root = loader.get_single_node()
        if root is None:
            return None
        _check_size(root)
        return loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        # Only PyYAML's problem/context sentences: never its snippet of the source line,
        # which could echo a value the user should not have put in the file.
        parts = [p for p in (exc.context, exc.problem) if p]
        message = "invalid YAML: " + ("; ".join(parts) if parts else "syntax error")
        raise YamlError(YamlProblem(line, message)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise YamlError(YamlProblem(line, f"invalid YAML: non-printable character U+{exc.character:04X}")) from None
    except yaml.YAMLError as exc:
        raise YamlError(YamlProblem(None, f"invalid YAML: {type(exc).__name__}")) from None
    except RecursionError:
        raise YamlError(YamlProblem(None, "nesting too deep")) from None
    finally:
        if loader is not None:
            loader.dispose()
