"""run.py's command line as data (planning.Command) and the layering promise: entry points only parse."""
from __future__ import annotations

import ast
from dataclasses import fields

import planning
from asynchronous.experiment import AsynchronousFlags
from conftest import REPO_ROOT
from federated.experiment import FederatedFlags

ENTRY_POINTS = {"run.py", "run_plot.py", "visualize.py", "predict.py", "label.py"}


def test_every_flag_is_one_field_of_the_command_and_the_defaults_agree():
    parser = planning.get_args_parser()
    dests = {action.dest for action in parser._actions if action.dest != "help"}
    plain = {f.name for f in fields(planning.Command)} - {"federated", "asynchronous", "given"}
    grouped = [{f.name for f in fields(kind)} for kind in (FederatedFlags, AsynchronousFlags)]
    assert sorted(plain | grouped[0] | grouped[1]) == sorted(dests)
    assert not (plain & grouped[0]) and not (plain & grouped[1]) and not (grouped[0] & grouped[1])
    defaults = planning.parse([])
    assert defaults.federated == FederatedFlags() and defaults.asynchronous == AsynchronousFlags()
    assert defaults.mode == "central" and defaults.given == frozenset()


def test_a_command_knows_its_mode_and_what_was_given():
    command = planning.parse(["--clients", "3", "--rou", "7", "--quiet"])
    assert command.mode == "federated" and command.federated.rounds == 7 and command.quiet
    assert command.given == {"clients", "rounds", "quiet"}
    assert planning.parse(["--async-workers", "1"]).mode == "asynchronous"


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_library_module_imports_an_entry_point_or_takes_an_argparse_namespace():
    library = [path for folder in ("common", "federated", "asynchronous", "labelling") for path in (REPO_ROOT / folder).rglob("*.py")]
    library.append(REPO_ROOT / "planning.py")
    for path in library:
        assert not imported_modules(path) & {name.removesuffix(".py") for name in ENTRY_POINTS}, path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
                # (common.cli.run_main takes the entry point's main, a Callable of a Namespace: that is no Namespace)
                assert not any(ast.unparse(a) in ("argparse.Namespace", "Namespace") for a in annotations), \
                    f"{path}: {node.name}"
