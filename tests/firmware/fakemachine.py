# A fake `machine` module for the HAL, usable on CPython and on MicroPython
# (shared_cases.py hands an instance to aquameter.hal.Board as its machine).


class _Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, machine, id, mode=-1, pull=-1, value=None):
        self.machine = machine
        self.id = id
        self.mode = mode
        self.pull = pull
        self.level = 1 if pull == self.PULL_UP else 0
        self.handler = None
        self.trigger = None
        self.hard = False
        machine.pins[id] = self
        if value is not None:
            self.level = value

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v

    def irq(self, handler=None, trigger=3, hard=False):
        self.handler = handler
        self.trigger = trigger
        self.hard = hard

    def fire(self, level):
        """An edge to `level`: the interrupt handler runs as the hardware would call it."""
        self.level = level
        self.handler(self)


class _Counter:
    FALLING = 2

    def __init__(self, machine, id, src, edge=1, filter_ns=0):
        self.id = id
        self.src = src
        self.edge = edge
        self.filter_ns = filter_ns
        self.count = 0
        machine.counters[id] = self

    def value(self):
        return self.count


class _WDT:
    def __init__(self, timeout):
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class _Timer:
    PERIODIC = 1

    def __init__(self, id):
        self.id = id
        self.callback = None

    def init(self, period=1000, mode=1, callback=None):
        self.period = period
        self.callback = callback


class Machine:
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5

    def __init__(self, counter=True):
        self.pins = {}
        self.counters = {}
        self.cause = self.PWRON_RESET
        self.wdt = None
        self.timer = None
        m = self

        class Pin(_Pin):
            def __init__(self, id, mode=-1, pull=-1, value=None):
                _Pin.__init__(self, m, id, mode, pull, value)
        self.Pin = Pin

        class Timer(_Timer):
            def __init__(self, id):
                _Timer.__init__(self, id)
                m.timer = self
        self.Timer = Timer
        if counter:
            class Counter(_Counter):
                def __init__(self, id, src, edge=1, filter_ns=0):
                    _Counter.__init__(self, m, id, src, edge, filter_ns)
            self.Counter = Counter

    def WDT(self, timeout=5000):
        self.wdt = _WDT(timeout)
        return self.wdt


    def reset_cause(self):
        return self.cause

    def disable_irq(self):
        self.irq_off = getattr(self, "irq_off", 0) + 1
        return self.irq_off

    def enable_irq(self, state):
        assert state == self.irq_off, "enable_irq() must get what disable_irq() returned"
        self.irq_off -= 1

    def reset(self):
        raise RuntimeError("reset")
