"""The layers hold: imports flow one way (cli → experiment/sweep/report → attacks/scenarios/
defenses → models/data/metrics → io/runtime/objective/types/registry), with no cycle between
modules or between top-level components."""

from __future__ import annotations

from tests.architecture import import_graph as g


def component_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between top-level components (``gradleak.sweep``, ``gradleak.report``, …)."""
    out: dict[str, set[str]] = {}
    for source, targets in edges.items():
        a = ".".join(source.split(".")[:2])
        for target in targets:
            b = ".".join(target.split(".")[:2])
            if a != b:
                out.setdefault(a, set()).add(b)
    return out


def test_every_module_has_a_layer():
    unplaced = sorted({m.split(".")[1] for m in g.modules() if "." in m and g.layer(m) is None})
    assert unplaced == [], f"give these components a layer in tests/architecture/import_graph.py: {unplaced}"


def test_no_import_cycle_between_modules():
    assert g.cycles(g.graph()) == []


def test_no_import_cycle_between_components():
    assert g.cycles(component_graph(g.graph())) == []


def test_no_import_against_the_layers():
    assert g.upward_imports(g.graph()) == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    # The checks themselves must be able to fail.
    edges = {"gradleak.models.a": {"gradleak.cli.main"}, "gradleak.cli.main": {"gradleak.models.a"}}
    assert g.cycles(edges) == [["gradleak.cli.main", "gradleak.models.a"]]
    assert g.upward_imports(edges) == [("gradleak.models.a", "gradleak.cli.main")]
