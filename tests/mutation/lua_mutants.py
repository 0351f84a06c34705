"""Hand-made mutants of the Redis limiter's Lua script, which mutmut does not touch.

mutmut mutates Python functions only; ``_redis_script.py`` keeps its rules (one decrease
per congestion event, at most half, growth only after a saturated clean window, never above the
configured limit, the window's margin) in one Lua string. Each entry below changes one of those
decisions. Run from the project root; each mutant is applied to a copy of the package in a
temporary folder, which the tests import first (``PYTHONPATH``), and the tests are run until
one fails::

    nice -n 10 .venv/bin/python tests/mutation/lua_mutants.py            # all of them
    nice -n 10 .venv/bin/python tests/mutation/lua_mutants.py L2_no_half_bound

A mutant that no test kills is a rule nothing guards. ``tests/test_mutation_tools.py`` checks
that every mutant still applies to the script as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "persona_async" / "_redis_script.py"
TESTS = ("tests/test_redis_holds.py", "tests/test_redis_rules.py", "tests/test_redis.py")

#: name -> (the script's text, the mutant's)
MUTANTS: dict[str, tuple[str, str]] = {
    "L1_every_429_a_new_event": ("  if s < decreased then", "  if false then"),
    "L2_no_half_bound": (
        "lowered = math.max(1, math.min(math.max(lowered, math.floor(cur / 2)), cur - 1))",
        "lowered = math.max(1, math.min(lowered, cur - 1))",
    ),
    "L3a_never_grows": (
        "if cur > 0 and sat and cur ~= configured then",
        "if false then",
    ),
    "L3b_grows_unsaturated": (
        "if cur > 0 and sat and cur ~= configured then",
        "if cur > 0 and cur ~= configured then",
    ),
    "L4a_growth_not_clamped": (
        "    if configured > 0 and cur > configured then cur = configured end\n",
        "",
    ),
    "L4b_stored_limit_not_clamped": (
        "if configured > 0 and (cur == 0 or cur > configured) then cur = configured end",
        "if configured > 0 and cur == 0 then cur = configured end",
    ),
    "L5a_window_off_by_one": (
        "'ZREVRANGE', KEYS[1], n - 1, n - 1,",
        "'ZREVRANGE', KEYS[1], n, n,",
    ),
    "L5b_window_without_margin": (
        "if burst == 0 or burst >= cur then return after(cur, span) end",
        "if burst == 0 or burst >= cur then return after(cur, period) end",
    ),
    "L6_nothing_delivered_still_lowers": ("    if delivered <= 0 then", "    if false then"),
    "L7_failed_probe_no_patience": (
        "if now - grown < 2 * period then patience = math.min(patience * 2, max_patience)",
        "if now - grown < 2 * period then patience = patience",
    ),
    "L8_rejected_counted_as_delivered": (
        "redis.call('ZCOUNT', KEYS[1], lo, hi) - redis.call('ZCOUNT', KEYS[4], lo, hi)",
        "redis.call('ZCOUNT', KEYS[1], lo, hi)",
    ),
    "L9_shorter_hold_cuts_pause": ("  if now + length > hold_until then", "  if true then"),
    "L11_retry_after_not_in_patience": (
        "patience * math.max(period, stall)",
        "patience * period",
    ),
    "L12_retry_after_not_recorded": (
        "  if mode == 'cooling' then  -- a Retry-After: what a failed probe will cost",
        "  if false then",
    ),
    "L13_learned_ignores_the_level_held": (
        "  local learned = (sustained > 0 and proven > sustained) and proven or sustained",
        "  local learned = sustained",
    ),
    "L14_level_held_forgotten_on_a_failed_probe": (
        "    else proven = 0 end",
        "    end proven = 0",
    ),
    "L15_level_held_not_recorded": ("      proven = math.min(cur, held)\n", ""),
    "L19_level_held_however_little_was_sent": ("    if held >= cur - 1 then", "    if true then"),
    "L10_hold_state_not_said": (
        "return reply(0, hold_until - now, string.match(hold, '^(%a+)'))",
        "return reply(0, hold_until - now)",
    ),
    "L16_a_refused_burst_lowers_the_rate": (
        "if redis.call('ZCOUNT', KEYS[1], int(s - near), int(s + near)) > 1 then",
        "if false then",
    ),
    "L17_pace_without_its_margin": (
        "after(burst, math.floor(burst * span / cur * (1 + pace_margin())))",
        "after(burst, math.floor(burst * span / cur))",
    ),
    "L20_pace_never_widened": (
        "after(burst, math.floor(burst * span / cur * (1 + pace_margin())))",
        "after(burst, math.floor(burst * span / cur * (1 + pace)))",
    ),
    "L21_an_early_arrival_lowers_the_rate": (
        "      and pace_margin() < max_margin then",
        "      and false then",
    ),
    "L18_paced_lane_held_by_its_learned_window": (
        "local wait = configured > 0 and after(configured, span) or 0",
        "local wait = after(cur, span)",
    ),
}


def mutated(source: str, name: str) -> str:
    """``source`` with mutant ``name`` applied; its text must occur exactly once."""
    old, new = MUTANTS[name]
    if source.count(old) != 1:
        raise ValueError(f"{name}: its text occurs {source.count(old)} times in {SCRIPT.name}")
    return source.replace(old, new)


def run(name: str | None) -> bool:
    """True when some test fails with mutant ``name`` (it is killed); None: no mutant."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "persona_async", Path(tmp) / "persona_async")
        if name is not None:
            script = Path(tmp) / SCRIPT.relative_to(ROOT)
            script.write_text(mutated(SCRIPT.read_text(), name))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(
            # -P: not the project root first on sys.path, so the mutated copy is imported.
            [sys.executable, "-P", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
    return done.returncode != 0


def main(names: list[str]) -> int:
    if run(None):
        print("the tests fail without a mutant: fix that first")
        return 2
    survivors = []
    for name in names or list(MUTANTS):
        killed = run(name)
        print(f"{'killed  ' if killed else 'SURVIVED'} {name}", flush=True)
        if not killed:
            survivors.append(name)
    print(f"{len(survivors)} of {len(names or MUTANTS)} survived")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
