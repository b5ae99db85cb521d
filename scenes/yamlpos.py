"""YAML documents with the source line of every value, so errors can name ``file:line``.

PyYAML's composer keeps a mark on every node; this module turns the node tree into plain Python
values and a map from field path to 1-based line number. Whatever the text, :func:`load` either
returns a document or raises :class:`YamlSyntaxError` with a line number: bad scalars (``!!int
abc``, ``2020-13-45``), control characters, recursive aliases and alias bombs included.

Numbers follow YAML 1.2 where PyYAML's YAML 1.1 rules surprise people: ``1e4`` is a float (PyYAML
alone reads it as the string ``'1e4'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

#: Upper bound on the values one document may expand to (aliases are expanded per path).
MAX_NODES = 200_000

_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e4``, ``2.5e-3``)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def format_path(path: PathKey) -> str:
    """``("stations", 2, "failures", "mttr")`` -> ``stations[2].failures.mttr``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(slots=True)
class Located:
    """A loaded document: ``value`` is plain Python, ``lines`` maps field paths to lines.

    ``duplicates`` lists mapping keys given twice (the path and the line of the repeat).
    """

    value: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    duplicates: list[tuple[PathKey, int]] = field(default_factory=list)

    def line(self, path: PathKey) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (0 if none)."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 0)


class YamlSyntaxError(Exception):
    """YAML could not be parsed; carries the 1-based line (0 if unknown) and a message."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load(text: str) -> Located:
    """Parse one YAML document with positions. Raises :class:`YamlSyntaxError`."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line, reason = _line_at(text, exc.position), _reader_reason(exc)
        raise YamlSyntaxError(line, f"YAML error: {reason}") from exc
    try:
        node = loader.get_single_node()
        doc = Located(value=None)
        if node is not None:
            doc.value = _Converter(loader, doc).convert(node, ())
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        raise YamlSyntaxError(line, f"YAML syntax error: {msg}") from exc
    except yaml.reader.ReaderError as exc:
        raise YamlSyntaxError(
            _line_at(text, exc.position), f"YAML error: {_reader_reason(exc)}"
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(0, f"YAML error: {exc}") from exc
    except RecursionError as exc:
        raise YamlSyntaxError(0, "YAML error: the document is nested too deeply") from exc
    finally:
        loader.dispose()


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(0, position)) + 1


def _reader_reason(exc: yaml.reader.ReaderError) -> str:
    char = exc.character
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char
    if isinstance(code, int):
        return f"unacceptable character #x{code:04x}: {exc.reason}"
    return f"cannot read the text: {exc.reason}"


class _Converter:
    """Turns a composed node tree into plain values, recording the line of every path."""

    def __init__(self, loader: yaml.SafeLoader, doc: Located) -> None:
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()  # ids of the collection nodes being converted (alias loops)

    def convert(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlSyntaxError(
                node.start_mark.line + 1,
                f"YAML error: the document expands to more than {MAX_NODES} values "
                "(too many aliases?)",
            )
        self.doc.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self.active:
                raise YamlSyntaxError(
                    node.start_mark.line + 1, "YAML error: an alias refers to its own parent"
                )
            self.active.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int | float | bool) or key is None:
                key = str(key) if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            child = (*path, str(key))
            key_line = key_node.start_mark.line + 1
            if key in out:
                self.doc.duplicates.append((child, key_line))
            out[key] = self.convert(value_node, child)
            self.doc.lines[child] = key_line
        return out

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            # PyYAML lets some bad scalars through as Python errors: !!int abc, 2020-13-45.
            value = getattr(node, "value", "")
            raise YamlSyntaxError(
                node.start_mark.line + 1,
                f"YAML error: cannot read {value!r} as {node.tag.rsplit(':', 1)[-1]}: {exc}",
            ) from exc
