"""A message names the setting the person can change as the library calls it; each surface rewords it."""

from __future__ import annotations

import argparse

from strongroom.cli import FLAGS, _parser
from strongroom.errors import RestoreError, worded

CLI = {"clean": "--clean", "missing_roles=no_owner": "--no-owner", "confirm_source": "--confirm-source"}


def test_a_surface_says_its_own_words_and_leaves_the_rest() -> None:
    text = str(RestoreError("restore with `clean`, or `missing_roles=no_owner`, or `confirm_source=shop-files`"))
    assert worded(text, CLI) == "restore with --clean, or --no-owner, or --confirm-source shop-files"
    assert worded(text, {"clean": "replace_contents", "missing_roles": "missing_roles"}) == (
        "restore with replace_contents, or missing_roles no_owner, or `confirm_source=shop-files`")
    assert worded(text, {}) == text  # the library's own words, e.g. in an alert
    # only a setting in backticks is reworded: a database called clean stays as it is
    assert worded("target u@h/clean is not empty: restore with `clean`", CLI) == (
        "target u@h/clean is not empty: restore with --clean")


def test_every_flag_the_cli_names_is_one_of_its_options() -> None:
    options: set[str] = set()
    parsers = [_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    assert set(FLAGS.values()) <= options
