"""The `aquafog` command as a person meets it: --version, a help text on every flag of
every subcommand, and no traceback when its output goes to a pipe that closes early."""

from __future__ import annotations

import argparse
import subprocess
import sys

from aquafog import __version__
from aquafog.cli import build_parser


def parsers(p: argparse.ArgumentParser, path=("aquafog",)):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, path + (name,))


def test_version():
    r = subprocess.run([sys.executable, "-m", "aquafog", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"aquafog {__version__}"


def test_every_flag_and_every_subcommand_has_a_help_text():
    missing = []
    count = 0
    for path, p in parsers(build_parser()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in action._choices_actions if not c.help]
                continue
            count += 1
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert count > 100  # the walk reached the subcommands
    assert missing == []


def test_output_to_a_pipe_closed_early_ends_quietly():
    """`aquafog config example gateway | head -1`: the reader leaves after one line."""
    r = subprocess.run(f"{sys.executable} -m aquafog config example gateway | head -1", shell=True,
                       capture_output=True, text=True)
    assert r.stdout.startswith("# aquafog gateway")
    assert r.stderr == ""
    # and `--help | head`, which argparse writes in one go
    r = subprocess.run(f"{sys.executable} -m aquafog setup fog --help | head -1", shell=True,
                       capture_output=True, text=True)
    assert r.stdout.startswith("usage: aquafog setup fog") and r.stderr == ""


def test_the_example_config_lists_every_key_with_its_meaning():
    from dataclasses import fields

    from aquafog.config import CLOUD_KEYS, GATEWAY_KEYS, CloudConfig, GatewayConfig
    for cls, docs, service in ((GatewayConfig, GATEWAY_KEYS, "gateway"), (CloudConfig, CLOUD_KEYS, "cloud")):
        assert set(docs) == {f.name for f in fields(cls)}
        out = subprocess.run([sys.executable, "-m", "aquafog", "config", "example", service],
                             capture_output=True, text=True, check=True).stdout
        for f in fields(cls):
            assert f"# {f.name}: {docs[f.name]}" in out
