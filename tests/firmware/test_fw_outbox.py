from aquameter.outbox import Outbox


def entry(boot, seq, pulses=0, ml=0):
    return [boot, seq, 1763990000 + seq, pulses, ml, 0, "open"]


def drain(ob):
    out = []
    while ob.peek_unsent() is not None:
        out.append(tuple(ob.peek_unsent()[:2]))
        ob.mark_sent()
    return out


def test_order_and_send_cursor():
    ob = Outbox(10)
    for s in range(4):
        ob.push(entry("b1", s))
    assert ob.unsent() == 4 and ob.unacked() == 0
    assert drain(ob) == [("b1", 0), ("b1", 1), ("b1", 2), ("b1", 3)]
    assert ob.unsent() == 0 and ob.unacked() == 4 and len(ob) == 4


def test_ack_frees_up_to_and_including_the_named_reading():
    ob = Outbox(10)
    for s in range(5):
        ob.push(entry("b1", s))
    drain(ob)
    assert ob.ack("b1", 2) == 3
    assert [tuple(e[:2]) for e in ob.entries()] == [("b1", 3), ("b1", 4)]
    assert ob.unacked() == 2
    assert ob.ack("b1", 2) == 0  # stale ack
    assert ob.ack("zzzzzzzz", 9) == 0  # unknown boot
    assert ob.ack("b1", 99) == 2 and len(ob) == 0


def test_ack_of_a_newer_boot_frees_older_boots():
    ob = Outbox(10)
    ob.push(entry("old", 7))
    ob.push(entry("old", 8))
    ob.push(entry("new", 0))
    ob.push(entry("new", 1))
    drain(ob)
    assert ob.ack("new", 0) == 3
    assert [tuple(e[:2]) for e in ob.entries()] == [("new", 1)]


def test_ack_of_unsent_entries_keeps_the_cursor_consistent():
    ob = Outbox(10)
    for s in range(4):
        ob.push(entry("b", s))
    ob.mark_sent()
    ob.ack("b", 2)  # the gateway had more than this connection sent (a resend of an old link)
    assert ob.unacked() == 0 and ob.unsent() == 1
    assert drain(ob) == [("b", 3)]


def test_overflow_drops_the_oldest_and_counts():
    ob = Outbox(3)
    for s in range(5):
        ob.push(entry("b", s))
    assert ob.dropped == 2 and len(ob) == 3
    assert drain(ob) == [("b", 2), ("b", 3), ("b", 4)]


def test_overflow_of_sent_entries_moves_the_cursor():
    ob = Outbox(3)
    for s in range(3):
        ob.push(entry("b", s))
    ob.mark_sent()
    ob.mark_sent()
    ob.push(entry("b", 3))  # drops ("b", 0), which was sent
    assert ob.unacked() == 1
    assert drain(ob) == [("b", 2), ("b", 3)]


def test_rewind_resends_unacked_in_order():
    ob = Outbox(10)
    for s in range(4):
        ob.push(entry("b", s))
    drain(ob)
    ob.ack("b", 1)
    ob.rewind()
    assert drain(ob) == [("b", 2), ("b", 3)]


def test_rebase_shifts_only_unsent_entries_of_the_boot():
    ob = Outbox(10)
    ob.push(entry("old", 5, 10, 20))
    ob.push(entry("new", 0, 100, 200))
    ob.push(entry("new", 1, 110, 220))
    ob.mark_sent()  # ("old", 5) went out
    ob.rebase("new", 1000, 2000)
    got = [(e[0], e[1], e[3], e[4]) for e in ob.entries()]
    assert got == [("old", 5, 10, 20), ("new", 0, 1100, 2200), ("new", 1, 1110, 2220)]
