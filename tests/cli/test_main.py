from digitnet import __version__
from tests.cli.conftest import run_cli


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"digitnet {__version__}"
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "submit", "data"):
        assert command in result.stdout


def test_every_command_has_help_for_every_flag():
    import argparse

    from digitnet.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"digitnet {name} {action.option_strings[0]} has no help text"


def test_unknown_command_and_bad_flag_exit_2_without_traceback():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run_cli("train", "--epochs", "zero")
    assert result.returncode == 2 and "expected a whole number" in result.stderr
    assert "Traceback" not in result.stderr
