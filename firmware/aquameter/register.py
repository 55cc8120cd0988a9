"""Cumulative volume register from raw pulse counts, in integer arithmetic only.

ESP32 floats are single precision, so litres are never a float here. The register is
a pulse count and a millilitre count tied by an anchor (the last point where both were
set together: restore, reconcile, k-factor change):

    ml = anchor_ml + (pulses - anchor_pulses) * 1_000_000 // pulses_per_m3

so ml is exact, monotonic, and the same function of pulses for as long as the anchor
holds. The anchor is persisted with the register, so a reboot continues the very same
function (no millilitre lost to rounding at each save).

Flow is in millilitres per minute, averaged from the pulse delta between two samples
at least _MIN_WINDOW_MS apart; it holds its value until flow_timeout ms pass without a
pulse, then drops to 0.
"""

from aquameter import const

_MIN_WINDOW_MS = const(1000)
_ML_PER_M3 = 1000000
_MS_PER_MIN_X_ML_PER_M3 = 60000000000  # 60_000 ms/min * 1_000_000 ml/m3


def _ticks_diff(a, b):
    return a - b


class Register:
    def __init__(self, pulses_per_m3, flow_timeout_ms, ticks_diff=_ticks_diff):
        if pulses_per_m3 < 1:
            raise ValueError("pulses_per_m3 must be >= 1")
        self.ppm3 = pulses_per_m3
        self.flow_timeout_ms = flow_timeout_ms
        self._diff = ticks_diff
        self.pulses = 0
        self.ml = 0
        self.anchor_pulses = 0
        self.anchor_ml = 0
        self.boot_pulses = 0  # register when this boot started (what reading seq 0 carries)
        self.boot_ml = 0
        self.flow_mlpm = 0
        self._raw = None  # last raw counter value seen
        self._win_t = None  # flow window start (ticks ms) and register pulses then
        self._win_p = 0
        self._last_pulse_t = None
        self.counter_resyncs = 0

    # --- restore / persist -------------------------------------------------------
    def restore(self, pulses, ml, anchor_pulses, anchor_ml, pulses_per_m3):
        """Continue from a saved register. A changed k-factor re-anchors at the saved point."""
        self.pulses = pulses
        self.ml = ml
        if pulses_per_m3 == self.ppm3 and 0 <= anchor_pulses <= pulses and 0 <= anchor_ml <= ml:
            self.anchor_pulses = anchor_pulses
            self.anchor_ml = anchor_ml
        else:
            self.anchor_pulses = pulses
            self.anchor_ml = ml
        self._recompute()
        if self.ml < ml:  # saved ml was ahead of the formula: never go backwards
            self.anchor_pulses = pulses
            self.anchor_ml = ml
            self.ml = ml
        self.boot_pulses = self.pulses
        self.boot_ml = self.ml

    def state(self):
        return {
            "pulses": self.pulses,
            "ml": self.ml,
            "anchor_pulses": self.anchor_pulses,
            "anchor_ml": self.anchor_ml,
            "ppm3": self.ppm3,
        }

    def ml_at(self, pulses):
        return self.anchor_ml + (pulses - self.anchor_pulses) * _ML_PER_M3 // self.ppm3

    def _recompute(self):
        self.ml = self.ml_at(self.pulses)

    # --- sampling ----------------------------------------------------------------
    def start(self, raw, now_ms):
        """First raw counter value of this boot: counting starts from here."""
        self._raw = raw
        self._win_t = now_ms
        self._win_p = self.pulses

    def sample(self, raw, now_ms):
        """Fold a raw counter value (monotonic within a boot) into the register."""
        if self._raw is None:
            self.start(raw, now_ms)
            return
        delta = raw - self._raw
        self._raw = raw
        if delta < 0:  # the counter went backwards (re-initialised): resync, count nothing
            self.counter_resyncs += 1
            delta = 0
        if delta:
            self.pulses += delta
            self._recompute()
            self._last_pulse_t = now_ms
        self._update_flow(now_ms)

    def _update_flow(self, now):
        dt = self._diff(now, self._win_t)
        dp = self.pulses - self._win_p
        if dp > 0:
            if dt >= _MIN_WINDOW_MS:
                self.flow_mlpm = dp * _MS_PER_MIN_X_ML_PER_M3 // (self.ppm3 * dt)
                self._win_t = now
                self._win_p = self.pulses
        elif dt >= self.flow_timeout_ms:
            self.flow_mlpm = 0
            self._win_t = now
        if self._last_pulse_t is not None and self._diff(now, self._last_pulse_t) >= self.flow_timeout_ms:
            self.flow_mlpm = 0
            self._last_pulse_t = None

    # --- reconcile -----------------------------------------------------------------
    def reconcile(self, gw_pulses, gw_ml):
        """Adopt the larger of the local and the gateway's register, field by field.

        Compared with the register this boot started from (what the readings of this
        boot build on), so water counted since boot is kept on top of the adopted
        register. When the gateway's register lies on this meter's own curve (the usual
        case: a stale state.json), only the pulses move and the anchor stays, so no
        rounding is carried into the millilitres. Returns the offsets (dpulses, dml), both >= 0.
        """
        dp = gw_pulses - self.boot_pulses
        dml = gw_ml - self.boot_ml
        if dp < 0:
            dp = 0
        if dml < 0:
            dml = 0
        if dp or dml:
            if not (dp and self.ml_at(gw_pulses) == gw_ml):
                self.anchor_pulses += dp
                self.anchor_ml += dml
            self.pulses += dp
            self.boot_pulses += dp
            self._win_p += dp
            self._recompute()
            self.boot_ml = self.ml_at(self.boot_pulses)
        return dp, dml
