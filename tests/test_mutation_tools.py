"""The mutation tools stay usable as the code changes: a hand-made mutant whose text is gone
from the source would silently test nothing."""

from __future__ import annotations

import pytest
from mutation import lua_mutants


@pytest.mark.parametrize("name", sorted(lua_mutants.MUTANTS))
def test_every_lua_mutant_changes_the_script_as_it_is(name: str) -> None:
    source = lua_mutants.SCRIPT.read_text()
    assert lua_mutants.mutated(source, name) != source
