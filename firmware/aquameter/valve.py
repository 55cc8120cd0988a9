"""Valve state machine: "open" or "closed", with idempotent command ids.

apply(state, cmd_id) returns the state after the command. The last few command ids
are remembered with their outcome, so a redelivered command (QoS 1 duplicate, gateway
re-send after reconnect) is answered with its original result and never re-actuates:
an old "closed" arriving after a newer "open" must not shut the water again.
The caller drives the relay when the state changes; this module touches no hardware.
"""

OPEN = "open"
CLOSED = "closed"
STATES = (OPEN, CLOSED)


class Valve:
    def __init__(self, state=OPEN, remember=8):
        if state not in STATES:
            state = OPEN
        self.state = state
        self._remember = remember
        self._ids = []  # [(cmd_id, state_after)], oldest first

    def seen(self, cmd_id):
        """The state a previously applied command left the valve in, or None."""
        for cid, after in self._ids:
            if cid == cmd_id:
                return after
        return None

    def apply(self, state, cmd_id=None):
        """Apply a requested state; returns the resulting state (unchanged if invalid)."""
        if cmd_id is not None:
            after = self.seen(cmd_id)
            if after is not None:
                return after
        if state in STATES:
            self.state = state
        if cmd_id is not None:
            self._ids.append((cmd_id, self.state))
            if len(self._ids) > self._remember:
                self._ids.pop(0)
        return self.state
