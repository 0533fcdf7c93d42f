"""freeze_startup_objects: what an actor process holds once built leaves the collector's view."""
import gc

from actors.process import freeze_startup_objects


def test_objects_alive_at_construction_are_frozen_and_later_ones_are_not():
    try:
        built = [object() for _ in range(10)] + [[i] for i in range(1000)]  # tracked containers
        frozen = freeze_startup_objects(collect=True)
        assert frozen == gc.get_freeze_count() and frozen >= 1000
        assert not any(o is built for o in gc.get_objects())  # the list itself is frozen, not tracked
        later = [[i] for i in range(10)]
        assert any(o is later for o in gc.get_objects())      # created since: still collected
    finally:
        gc.unfreeze()
