from aquameter.valve import Valve


def test_apply_changes_state_and_returns_it():
    v = Valve("open")
    assert v.apply("closed", "c1") == "closed"
    assert v.state == "closed"
    assert v.apply("closed", "c2") == "closed"  # idempotent
    assert v.apply("open", "c3") == "open"


def test_duplicate_id_answers_the_original_result_without_reactuating():
    v = Valve("open")
    v.apply("closed", "c1")
    v.apply("open", "c2")
    assert v.seen("c1") == "closed"
    assert v.apply("closed", "c1") == "closed"  # the answer c1 got the first time...
    assert v.state == "open"  # ...but an old command never shuts the water again


def test_invalid_state_changes_nothing():
    v = Valve("closed")
    assert v.apply("ajar") == "closed"
    assert v.state == "closed"
    assert Valve("bogus").state == "open"


def test_remembers_only_the_last_ids():
    v = Valve("open", remember=3)
    for i in range(5):
        v.apply("closed" if i % 2 else "open", "c%d" % i)
    assert v.seen("c0") is None and v.seen("c1") is None
    assert v.seen("c4") == "open" and v.seen("c3") == "closed"
