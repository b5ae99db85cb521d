"""Variants of a design sweep in the served twin: designers switch the running line between the
Pareto-front variants of a results table and compare two side by side (``twin serve FILE
--variants RESULTS``).

The front (``twin.design.results.pareto_front``) goes to viewers as the ``variants`` entity
(props ``design``, ``objectives``, ``front``: one map per variant with its parameters and
objective values; component ``selected``). The ``variant.select`` command (designers) restarts the
line's simulation with that variant's parameters (``args: {variant: N}``; ``N`` = -1 for the base
line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenes.spec import LineSpec
from streaming.auth import Principal
from streaming.hub import CommandRegistry, Outcome
from streaming.protocol import Command, ErrorCode, Role
from streaming.store import SceneStore
from twin.simline import SimulatedLine

ENTITY = "variants"


class Variants:
    """The front of ``results`` for ``line`` (see the module docstring)."""

    def __init__(self, results: str | Path, line: SimulatedLine, *, top: int = 50) -> None:
        from twin.design import results as res

        self.df, self.meta = res.read_table(results)
        self.front = res.pareto_front(self.df, self.meta)[:top]
        self.line = line
        self.base: LineSpec = line.spec
        self.selected: int | None = None

    def populate(self, store: SceneStore) -> None:
        store.add(
            ENTITY,
            "variants",
            props={
                "design": self.meta.get("design", ""),
                "objectives": [k for k, _ in self.meta.get("objectives", [])],
                "front": self.front,
            },
            state={"selected": None},
        )

    def spec_of(self, variant: int) -> LineSpec:
        from scenes.lineparse import load_line
        from twin.design.space import load_space
        from twin.design.sweep import variant_line

        rows = self.df[self.df["variant"] == variant]
        if rows.empty:
            raise KeyError(variant)
        line = load_line(self.meta["line"])
        space = load_space(self.meta["space"], line)
        spec, _ = variant_line(space, line, rows.iloc[0])
        return spec

    def select(self, p: Principal, c: Command, store: SceneStore) -> Outcome:
        v = c.args.get("variant")
        if not isinstance(v, int) or isinstance(v, bool):
            return Outcome(
                ok=False,
                code=ErrorCode.INVALID_ARGS.value,
                reason="args.variant must be a variant number (-1: the base line)",
            )
        try:
            spec = self.base if v == -1 else self.spec_of(v)
            self.line.restart(spec)
        except KeyError:
            return Outcome(
                ok=False, code=ErrorCode.INVALID_ARGS.value, reason=f"no variant {v} in the results"
            )
        except ValueError as exc:
            return Outcome(ok=False, code=ErrorCode.INVALID_ARGS.value, reason=str(exc))
        self.selected = None if v == -1 else v
        store.set_value(ENTITY, "selected", self.selected)
        return Outcome(ok=True, result={"variant": v})

    def register_commands(self, registry: CommandRegistry, store: SceneStore) -> None:
        registry.register(
            "variant.select",
            {Role.DESIGNER},
            lambda p, c: self.select(p, c, store),
            "run another variant of the sweep: args {variant: N} (-1: the base line)",
        )


def summary(entry: dict[str, Any]) -> str:
    """A one-line summary of a front entry (for logs)."""
    objs = ", ".join(
        f"{k} {v['mean']:.4g}" for k, v in entry["objectives"].items() if v["mean"] is not None
    )
    return f"variant {entry['variant']}: {objs}"
