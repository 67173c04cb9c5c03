"""The check before extraction, started while the model is built: the same verdicts as checking afterwards,
every bad file named, files decoded before not test-decoded again, and no thread left behind."""

import threading
from pathlib import Path

import pytest

from pipeline.activations import ExtractConfig, extract
from pipeline.activations import checking
from pipeline.activations.checking import CheckAhead, check_images, chunks
from pipeline.errors import BadImageError, ModelError
from pipeline.inputs import check_files, from_folder
from pipeline.inputs.decode import PIL_DECODER

from .conftest import make_folder


def _threads():
    return [t for t in threading.enumerate() if t.name == "layerprobe-check-ahead"]


class Counting:
    """PIL's decoder, counting the test decodes; ``when_checked(n)`` runs after the n-th."""

    def __init__(self, when_checked=lambda n: None):
        self.checked, self.when_checked = [], when_checked

    def policy(self):
        return PIL_DECODER.policy()

    def decode(self, path, frame=None, data=None):
        return PIL_DECODER.decode(path, frame, data)

    def check(self, path, frame, data):
        try:
            return PIL_DECODER.check(path, frame, data)
        finally:
            self.checked.append(Path(path).name)
            self.when_checked(len(self.checked))

    def trusted_note(self, data):
        return PIL_DECODER.trusted_note(data)


@pytest.fixture
def folder(tmp_path):
    root = make_folder(tmp_path / "imgs", n_per_class=20)
    (root / "benign" / "zz_bad.png").write_bytes(b"not an image")
    return root


def test_checking_ahead_gives_the_checks_of_checking_afterwards_in_input_order(folder, monkeypatch):
    monkeypatch.setattr(checking, "CHUNK", 7)
    images = from_folder(folder)
    with CheckAhead(images, progress=False) as ahead:
        got = ahead.take()
    assert got == check_files([r.path for r in images.records])
    assert [c.error is not None for c in got].count(True) == 1
    assert not _threads()


def test_files_decoded_before_are_not_test_decoded_once_the_settings_are_known(folder, monkeypatch):
    monkeypatch.setattr(checking, "CHUNK", 4)
    monkeypatch.setattr(checking, "check_files", lambda *a, **k: check_files(*a, **{**k, "workers": 1}))
    images = from_folder(folder)
    plain = check_files([r.path for r in images.records])
    trusted = {c.sha256 for c in plain if c.error is None}  # everything but zz_bad.png was decoded before
    ahead = None
    # the model is built while the background thread checks its first chunk of 4 files
    decoder = Counting(lambda n: ahead._stop.set() if n == 2 else None)
    object.__setattr__(images, "decoder", decoder)
    with CheckAhead(images, progress=False) as ahead:
        got = ahead.take(trusted)
    assert got == plain
    names = [r.path.name for r in images.records]
    assert len(ahead.done) == 4 and decoder.checked[:4] == names[:4]  # the first chunk, test-decoded
    assert decoder.checked[4:] == ["zz_bad.png"]  # of the rest, only the file no cache decoded before


def test_chunks_never_split_the_frames_of_one_file():
    paths = ["a"] * 5 + ["b"] + ["c"] * 3
    spans = list(chunks(paths, 2))
    assert spans == [(0, 5), (5, 9)]  # "b" and the three frames of "c"
    assert list(chunks(["a", "b", "c", "d", "e"], 2)) == [(0, 2), (2, 4), (4, 5)]
    assert list(chunks([], 3)) == []


def test_an_error_in_the_background_is_raised_by_take(folder, monkeypatch):
    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(checking, "check_files", broken)
    ahead = CheckAhead(from_folder(folder), progress=False)
    with pytest.raises(MemoryError, match="no room"):
        ahead.take()
    assert not _threads()


def test_every_bad_file_is_named_whether_checked_ahead_or_after(folder, tmp_path):
    (folder / "malignant" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    with pytest.raises(BadImageError) as caught:
        check_images(from_folder(folder), "error", progress=False)
    named = sorted(Path(p).name for p, _ in caught.value.problems)
    assert named == ["cut.jpg", "zz_bad.png"]
    with pytest.raises(BadImageError) as through_extract:
        extract(from_folder(folder), ExtractConfig(model="test_efficientnet", random_init=True, img_size=64),
                out=tmp_path / "c.h5", progress=False)
    assert sorted(Path(p).name for p, _ in through_extract.value.problems) == named
    assert not (tmp_path / "c.h5").exists() and not _threads()


def test_a_failed_model_build_stops_the_check(folder, tmp_path):
    with pytest.raises(ModelError):
        extract(from_folder(folder), ExtractConfig(model="no_such_model_anywhere", random_init=True),
                out=tmp_path / "c.h5", progress=False)
    assert not _threads()
