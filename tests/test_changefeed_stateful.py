"""A Hypothesis state machine against the embedded server: random sequences of stores,
re-stores of a changed instance (delete, then the same UIDs with other values), deletes of
instances, series and studies; after every step ``harvest(update=True)`` of one mirror equals
a fresh harvest (same rows, columns, dtypes and Arrow schema), and the change feed's current
entries are the archive's instances."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from support import make_dataset, to_bytes
from test_changefeed import assert_same_dataset

import dicomframes
from dicomframes.server import serve
from dicomframes.standard.uids import new_uid

pytest.importorskip("pyarrow")


class MirrorMachine(RuleBasedStateMachine):
    """The model: SOPInstanceUID -> (study, series, InstanceNumber)."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="cf-stateful-"))
        self.server = serve(self.folder / "archive", durable=False)
        self.client = dicomframes.connect(self.server.url, progress=False)
        self.model: dict[str, tuple[str, str, int]] = {}
        self.rounds = 0

    def _store(self, sop: str, study: str, series: str, number: int) -> None:
        ds = make_dataset(study, series, number, rows=2, cols=2, description=f"v{number}")
        ds.SOPInstanceUID = sop
        self.client.store([to_bytes(ds)], progress=False)
        self.model[sop] = (study, series, number)

    @initialize(studies=st.integers(1, 3))
    def start(self, studies: int) -> None:
        for _ in range(studies):
            study, series = new_uid(), new_uid()
            for number in range(1, 3):
                self._store(new_uid(), study, series, number)
        self.client.harvest(self.folder / "mirror", progress=False)

    @rule(count=st.integers(1, 3), place=st.sampled_from(["study", "series", "instance"]),
          pick=st.randoms(use_true_random=False))
    def store(self, count: int, place: str, pick) -> None:
        if self.model and place != "study":
            study, series, _ = self.model[pick.choice(sorted(self.model))]
            if place == "series":
                series = new_uid()
        else:
            study, series = new_uid(), new_uid()
        for number in range(count):
            self._store(new_uid(), study, series, 10 + number)

    @precondition(lambda self: bool(self.model))
    @rule(pick=st.randoms(use_true_random=False))
    def restore_changed(self, pick) -> None:
        sop = pick.choice(sorted(self.model))
        study, series, number = self.model[sop]
        self.client.delete(study, series, sop)
        self._store(sop, study, series, number + 100)

    @precondition(lambda self: bool(self.model))
    @rule(level=st.sampled_from(["instance", "series", "study"]),
          pick=st.randoms(use_true_random=False))
    def delete(self, level: str, pick) -> None:
        sop = pick.choice(sorted(self.model))
        study, series, _ = self.model[sop]
        if level == "instance":
            self.client.delete(study, series, sop)
            gone = {sop}
        elif level == "series":
            self.client.delete(study, series)
            gone = {s for s, (_, se, _) in self.model.items() if se == series}
        else:
            self.client.delete(study)
            gone = {s for s, (stu, _, _) in self.model.items() if stu == study}
        for uid in gone:
            del self.model[uid]

    @invariant()
    def mirror_equals_a_fresh_harvest(self) -> None:
        if not (self.folder / "mirror").exists():
            return
        self.rounds += 1
        summary = self.client.harvest(self.folder / "mirror", update=True, progress=False)
        assert summary.rows == len(self.model)
        fresh = self.folder / f"fresh-{self.rounds}"
        self.client.harvest(fresh, progress=False)
        assert_same_dataset(self.folder / "mirror", fresh)
        shutil.rmtree(fresh)
        feed = self.client.changefeed()
        current = set(feed.loc[feed["State"] == "current", "SopInstanceUid"])
        assert current == set(self.model)

    def teardown(self) -> None:
        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


MirrorMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=8, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking a run of servers: slow
    suppress_health_check=[HealthCheck.too_slow])
TestMirror = MirrorMachine.TestCase
