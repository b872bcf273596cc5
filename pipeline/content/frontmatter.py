"""A post file's text -> (front matter as data, the line of each key and item, body).

Dates stay text (parsed later in the clinic's zone). Besides the top-level keys,
the line of every item of a list and every key of a mapping one or two levels down
is recorded (``sources[2]``, ``sources[2].url``, ``social.x``), so a mistake in the
third source is reported at that source's line, not at ``sources:``.
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.errors import PipelineError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


class _StringDateLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that leaves dates as text, so we parse them in the clinic's zone."""


_StringDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def split_front_matter(text: str, path: str) -> tuple[str, str, int]:
    """-> (yaml text, body, first body line)."""
    if not text.strip():
        raise PipelineError(
            "file is empty",
            path=path,
            line=1,
            field="front matter",
            hint="start with a '---' line, then title: and date:, then '---'",
        )
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        raise PipelineError(
            "missing front matter",
            path=path,
            line=1,
            field="front matter",
            hint="the first line must be '---', followed by title: and date: and a closing '---'",
        )
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise PipelineError(
        "front matter is not closed",
        path=path,
        line=1,
        field="front matter",
        hint="add a line '---' after the last front-matter key",
    )


def _file_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 2  # +1 for 1-based, +1 for the opening '---'


def _nested_lines(prefix: str, node: yaml.Node, depth: int, lines: dict[str, int]) -> None:
    """``lines[prefix[1]]``, ``lines[prefix.key]``: list items (1-based) and mapping keys."""
    if depth == 0:
        return
    if isinstance(node, yaml.SequenceNode):
        for number, item in enumerate(node.value, start=1):
            name = f"{prefix}[{number}]"
            lines[name] = _file_line(item)
            _nested_lines(name, item, depth - 1, lines)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            name = f"{prefix}.{key_node.value}"
            lines[name] = _file_line(key_node)
            _nested_lines(name, value_node, depth - 1, lines)


def parse_yaml(source: str, path: str) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """-> (data, line of each top-level key, line of each item below them)."""
    loader = _StringDateLoader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PipelineError(
                "front matter is empty", path=path, line=2, field="front matter", hint="add at least title: and date:"
            )
        if not isinstance(node, yaml.MappingNode):
            raise PipelineError(
                "front matter is not a mapping",
                path=path,
                line=_file_line(node),
                field="front matter",
                hint="write 'key: value' lines",
            )
        lines: dict[str, int] = {}
        items: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[key] = _file_line(key_node)
            _nested_lines(key, value_node, 2, items)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else 2
        problem = exc.problem or "invalid YAML"
        raise PipelineError(
            f"invalid YAML: {problem}",
            path=path,
            line=line,
            field="front matter",
            hint="check indentation, colons and quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"invalid YAML: {exc}", path=path, line=2, field="front matter") from None
    finally:
        loader.dispose()
    return data, lines, items
