"""When an alert fires and when it is armed again: the rules, as pure functions of integers.

Re-arming has a hysteresis: a fired alert is armed again only once what it watches is past its threshold by a margin
(``alerts_rearm_margin_percent`` of the threshold, 10 % by default). Available credits move back and forth on their
own: a hold reserves credits and its release gives them back (and a budget counts a hold in full until it resolves),
so an account doing tool calls near its threshold would cross it again and again within minutes; without a margin,
each of those would mail the customer. A purchase or a grant, the usual recovery, clears any such margin by far.
"""

from __future__ import annotations

from datetime import timedelta

# The budget thresholds, in percent of the limit, lowest first.
BUDGET_LEVELS = (50, 80, 100)
# Credits expiring within this window are announced (once per lot).
EXPIRING_WITHIN = timedelta(days=30)


def margin_credits(threshold_credits: int, margin_percent: int) -> int:
    """How far past a threshold of ``threshold_credits`` a recovery must go (rounded down)."""
    return threshold_credits * margin_percent // 100


def low_balance_crossed(available_credits: int, threshold_credits: int) -> bool:
    """Fire: fewer credits available than the threshold."""
    return available_credits < threshold_credits


def low_balance_recovered(available_credits: int, threshold_credits: int, margin_percent: int) -> bool:
    """Arm again: at least the threshold and its margin available."""
    return available_credits >= threshold_credits + margin_credits(threshold_credits, margin_percent)


def level_credits(limit_credits: int, level_percent: int) -> int:
    """The usage at which a budget of ``limit_credits`` reaches ``level_percent`` (rounded up: 50 % of 3 is 2)."""
    return -(-limit_credits * level_percent // 100)


def budget_level_reached(used_credits: int, limit_credits: int) -> int:
    """The highest threshold (percent) a budget's usage has reached this period; 0 for none."""
    reached = [level for level in BUDGET_LEVELS if used_credits >= level_credits(limit_credits, level)]
    return reached[-1] if reached and limit_credits > 0 else 0


def budget_level_held(used_credits: int, limit_credits: int, margin_percent: int) -> int:
    """The highest threshold a budget's usage still holds, the margin below it included: a fired threshold above it
    is armed again (the limit was raised, or a hold gave credits back)."""
    held = [
        level
        for level in BUDGET_LEVELS
        if used_credits
        >= level_credits(limit_credits, level) - margin_credits(level_credits(limit_credits, level), margin_percent)
    ]
    return held[-1] if held and limit_credits > 0 else 0
