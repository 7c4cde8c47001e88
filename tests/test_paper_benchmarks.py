"""The papers' protocols in benchmarks/kafal_logo.py and benchmarks/aal.py: every command is a valid run.py
command of the intended mode and protocol (the runs themselves are benchmarks, not tests)."""
from __future__ import annotations

from pathlib import Path

import planning
from benchmarks import aal, kafal_logo


def parsed(command: list[str]):
    return planning.parse(command[2:])


def test_kafal_logo_commands_follow_the_papers_protocol(tmp_path):
    args = kafal_logo.get_args_parser().parse_args(["--runs", "2", "--out", str(tmp_path)])
    commands = [parsed(command) for command in kafal_logo.commands(args)]
    assert len(commands) == 4  # per run: the methods with cross-entropy, KSAS with KCFU
    for flags in commands:
        assert flags.mode == "federated" and flags.imbalance == [1.0] and flags.federated.clients == 10
        assert (flags.initial_labels, flags.budget, flags.federated.participation, flags.federated.reinit_each_cycle) == \
            (5000, 2500, 0.8, True)
    assert [(c.run_start, c.federated.local_loss) for c in commands] == [(0, "ce"), (0, "kcfu"), (1, "ce"), (1, "kcfu")]
    assert commands[0].methods == ["random", "entropy", "ksas", "logo", "fk-nn"] and commands[1].methods == ["ksas"]


def test_aal_commands_follow_the_papers_protocol(tmp_path):
    args = aal.get_args_parser().parse_args(["--out", str(tmp_path)])
    commands = {name: parsed(command) for name, command in zip(aal.settings(), aal.commands(args))}
    assert len(commands) == 8
    for name, command in commands.items():
        flags = command.asynchronous
        assert command.mode == "asynchronous" and flags.async_workers == 10 and command.initial_labels == 5000
        assert flags.sync == name.endswith(", sync") and flags.latency == (0.0, 60.0)
        assert flags.trainings * flags.train_threshold == 2000  # the same labels at every server count
        assert aal.setting_of({"assignment": flags.assignment, "servers": flags.servers, "sync": flags.sync}) == name
    assert {(c.asynchronous.servers, c.asynchronous.trainings) for c in commands.values()} == {(1, 2), (2, 4), (4, 8)}


def test_both_reports_read_an_empty_results_folder(tmp_path: Path):
    assert "| entropy DA, 4 servers, async | 0 |" in aal.report(aal.get_args_parser().parse_args(["--out", str(tmp_path)]))
    text = kafal_logo.report(kafal_logo.get_args_parser().parse_args(["--out", str(tmp_path)]))
    assert text.startswith("# KAFAL and LoGo under their own protocol")
