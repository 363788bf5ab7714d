"""A Graph API simulator that plays Meta: it enforces the messaging rules of POLICY.md on its
own (it never imports `bot.policy`, so a bug in the bot's core is caught, not mirrored) and
delivers signed webhooks for scripted user actions.

    sim = Simulator(clock, [("1784", "instagram", "TOKEN")], app_secret="s", webhook_url=url)
    app = create_simulator_app(sim)          # the Graph API, plus /_sim/* controls
    await sim.player.comment("1784", "alice", "reel1", "PRICING")
    sim.accepted(), sim.refused(), sim.log   # what the referee saw
"""

from __future__ import annotations

from bot.simulator.control import ACTIONS, run_action, send_action
from bot.simulator.core import SIMULATOR, AccountSpec, Simulator
from bot.simulator.faults import FaultKind, Faults
from bot.simulator.graph import create_simulator_app
from bot.simulator.model import CommentRecord, Contact, Model, Profile, SimAccount, Token
from bot.simulator.player import Delivered, Player
from bot.simulator.record import LogEntry, SendLog
from bot.simulator.rules import (
    Accepted,
    Basis,
    Reason,
    Refused,
    SimulatorError,
    SimulatorRules,
    Verdict,
)

__all__ = [
    "ACTIONS",
    "SIMULATOR",
    "Accepted",
    "AccountSpec",
    "Basis",
    "CommentRecord",
    "Contact",
    "Delivered",
    "FaultKind",
    "Faults",
    "LogEntry",
    "Model",
    "Player",
    "Profile",
    "Reason",
    "Refused",
    "SendLog",
    "SimAccount",
    "Simulator",
    "SimulatorError",
    "SimulatorRules",
    "Token",
    "Verdict",
    "create_simulator_app",
    "run_action",
    "send_action",
]
