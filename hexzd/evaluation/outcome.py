"""A match's outcome, in a module of its own: the daemon's messages carry it,
and every client that decodes them (the CLI, the dashboard) should not have
to import the players, torch and the kernels to do so."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MatchEnd(BaseModel):
    """A match's verdict: accepted or rejected (promotion duel), played (rating match).

    The one definition: the daemon's message (hexzd.daemon.messages.MatchEnd)
    adds which match it was and its CPU time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: Literal["accepted", "rejected", "played"]
    wins: int = Field(ge=0)
    losses: int = Field(ge=0)
    llr: float | None  # the SPRT's log-likelihood ratio; None for a rating match
    error: str = ""  # why an outside engine ended its rating match early: its games so far count
