"""freeze_startup_objects: what an actor process holds once built leaves the collector's view.

Checked in a fresh interpreter: freezing is process-wide state, the suite's own process must
neither be frozen by the test nor have it see objects other tests froze."""
import subprocess
import sys

PROBE = """
import gc
from actors.process import freeze_startup_objects
built = [[i] for i in range(1000)]                       # tracked containers alive at construction
frozen = freeze_startup_objects(collect=True)
assert frozen == gc.get_freeze_count() and frozen >= 1000, frozen
assert not any(o is built for o in gc.get_objects())     # frozen: no collection walks it
later = [[i] for i in range(10)]
assert any(o is later for o in gc.get_objects())          # created since: still collected
print("ok", frozen)
"""


def test_objects_alive_at_construction_are_frozen_and_later_ones_are_not():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
