"""Runs `layerprobe` in a child process with faults planted, for the reliability tests.

Environment:
  CRASH_AT=after_data:N | after_commit:N | finalise   SIGKILL this process at that point
  SLOW_BATCH=seconds                                  sleep per batch, so kills land mid-run
  FSIZE_LIMIT=bytes                                   RLIMIT_FSIZE, with SIGXFSZ ignored
  FSIZE_AT_SEAL=bytes                                 the same, set when sealing starts: the file may grow by bytes
"""

import os
import resource
import signal
import sys
import time


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def plant_faults():
    from pipeline.activations import LayerTap
    from pipeline.cache.writer import CacheWriter

    crash = os.environ.get("CRASH_AT")
    if crash:
        point, _, nth = crash.partition(":")
        calls = {"n": 0}
        commit, seal = CacheWriter._commit, CacheWriter._seal

        def crash_commit(self, committed):
            calls["n"] += 1
            if point == "after_data" and calls["n"] == int(nth):
                _die()
            commit(self, committed)
            if point == "after_commit" and calls["n"] == int(nth):
                _die()

        def crash_seal(self, *args):
            seal(self, *args)
            _die()

        CacheWriter._commit = crash_commit
        if point == "finalise":
            CacheWriter._seal = crash_seal
    if os.environ.get("SLOW_BATCH"):
        delay, run = float(os.environ["SLOW_BATCH"]), LayerTap.run

        def slow_run(self, images):
            time.sleep(delay)
            return run(self, images)

        LayerTap.run = slow_run
    if os.environ.get("FSIZE_LIMIT"):
        _limit_file_size(int(os.environ["FSIZE_LIMIT"]))
    if os.environ.get("FSIZE_AT_SEAL"):
        extra, finish = int(os.environ["FSIZE_AT_SEAL"]), CacheWriter.finish

        def limited_finish(self, *args):
            _limit_file_size(self.partial.stat().st_size + extra)
            return finish(self, *args)

        CacheWriter.finish = limited_finish


def _limit_file_size(limit):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


if __name__ == "__main__":
    plant_faults()
    from pipeline.cli import main

    sys.argv[0] = "layerprobe"
    main()
