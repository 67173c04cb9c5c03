"""The typed provenance contract: CodeSource (settings key, named differences) and CacheManifest."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache import CacheManifest, CacheWriter, CodeSource, OutputSpec, RowTable, open_cache
from pipeline.cache.format import cache_key
from pipeline.cache.manifest import ProvenanceCopy, manifest_json
from pipeline.cache.source import settings_differences
from pipeline.errors import CacheError
from pipeline.model.build import Preprocessing
from .conftest import forge_manifest

# Written by `extract` before CacheManifest existed (tiny random-init model, 6 images, --bn-stats).
TODAY = json.loads((Path(__file__).parent / "data" / "cache_manifest_v2.json").read_text())
TODAY_SETTINGS_KEY = "1b6f17ce305f4418099e01a5dc8c6daefe52c3899ba773a41caedda491f22532"  # that cache's attribute
LITE0 = Preprocessing((3, 64, 64), "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875, "center")


def _source(**change) -> CodeSource:
    parts = dict(model="efficientnet_lite0", weights_sha256="ab" * 32, preprocessing=LITE0.as_dict(),
                 precision="float32")
    return CodeSource(**{**parts, **change})


def test_the_settings_key_and_default_name_are_the_ones_computed_before_code_source():
    from pipeline.activations.extract import _default_name

    # Computed on main (before this type existed) from the same settings via extract's own dict.
    key = _source().settings_key("/data/br35h")
    assert key == "72ef7e246a0b7ce6ecab9e2236183a674df445914b24b3ee6f83c6f31078863c"
    assert _default_name("br35h", "efficientnet_lite0", key) == "br35h-efficientnet_lite0-72ef7e246a0b.h5"
    assert CacheManifest.from_dict(TODAY).settings_key == TODAY_SETTINGS_KEY


def test_a_built_and_a_stored_source_are_equal():
    stored = json.loads(json.dumps(LITE0.as_dict()))  # tuples come back as lists
    assert _source(preprocessing=stored) == _source()
    assert _source().differences(_source(preprocessing=stored)) == ()
    assert _source().settings_key("/r") == _source(preprocessing=stored).settings_key("/r")


def test_differences_are_named_in_field_order_with_both_values():
    other = _source(model="resnet18", preprocessing={**LITE0.as_dict(), "input_size": (3, 96, 96), "crop_pct": 1.0},
                    precision="float16-autocast")
    found = _source().differences(other)
    assert [d.name for d in found] == ["model", "preprocessing", "precision"]
    assert (found[0].mine, found[0].theirs) == ("efficientnet_lite0", "resnet18")
    assert found[1].keys == ("crop_pct", "input_size")
    assert found[1].detail() == "crop_pct 0.875 vs 1.0, input_size [3, 64, 64] vs [3, 96, 96]"
    assert found[2].detail() == "float32 vs float16-autocast"
    assert [d.name for d in _source().differences(other, among=("weights_sha256", "model"))] == ["model"]
    assert _source(weights_sha256="cd" * 32).differences(_source())[0].label == "weights sha256"


def test_precision_is_compared_only_when_both_know_it():
    assert _source(precision=None).differences(_source()) == ()
    assert [d.name for d in _source(precision="float16-autocast").differences(_source())] == ["precision"]


def test_settings_differences_add_the_input_root():
    assert settings_differences(_source(), "/a", _source(precision="x"), "/b") == ["precision", "input_root"]
    assert settings_differences(_source(), "/a", _source(), "/a") == []


def test_the_manifest_of_today_is_typed_and_given_back_unchanged():
    m = CacheManifest.from_dict(TODAY)
    weights = "43d3fbec8dd4a5c44226840fe88b3006363271ee805789a7b707df24dbb5d45b"
    assert m.source == CodeSource("test_efficientnet", weights, TODAY["preprocessing"], "float32")
    assert (m.input.name, m.input.root, m.input.n_images) == ("images", "/tmp/i13/images", 6)
    assert m.input.class_names == ("benign", "malignant")
    assert m.outputs == ("blocks.0/avg", "blocks.1/avg", "blocks.2/avg", "blocks.3/avg", "blocks.4/avg",
                         "pre_logits/none")
    assert (m.runtime.device, m.runtime.batch_size, m.runtime.workers, m.runtime.duration_s) == ("cpu:x86_64", 8, 0,
                                                                                                2.758)
    assert m.shard is None and m.get("bn_stats")["modules"] == 13
    assert m.as_dict() == TODAY


def _write_today(path: Path, manifest: dict) -> Path:
    """A cache written by the writer every stage uses, holding a manifest in today's JSON shape."""
    ids = ["benign/img01.jpg", "benign/img02.png", "benign/img06.png", "malignant/img01.jpg", "malignant/img03.png",
           "malignant/img06.png"]
    rows = RowTable(ids=ids, labels=[0, 0, 0, 1, 1, 1], class_names=["benign", "malignant"], sizes=[1] * 6,
                    sha256=["0" * 64] * 6)
    widths = {"blocks.0": 16, "blocks.1": 24, "blocks.2": 32, "blocks.3": 48, "blocks.4": 64, "pre_logits": 256}
    outputs = manifest.outputs if isinstance(manifest, CacheManifest) else manifest["outputs"]
    key = manifest.key if isinstance(manifest, CacheManifest) else manifest["key"]
    specs = [OutputSpec(*o.split("/"), widths[o.split("/")[0]], {"name": o.split("/")[0]}) for o in outputs]
    codes = {(s.layer, s.pooling): np.arange(6 * s.channels, dtype=np.float32).reshape(6, -1) for s in specs}
    writer = CacheWriter(path, key, TODAY_SETTINGS_KEY, manifest, rows, specs)
    try:
        writer.copy_rows(None, [], np.zeros(0, np.int64), np.zeros(0, np.int64))
        writer.write(0, np.arange(6), codes)
        writer.finish(manifest, 6)
    finally:
        writer.close()
    return path


def test_a_cache_in_todays_format_opens_through_the_typed_manifest(tmp_path):
    manifest = copy.deepcopy(TODAY)
    manifest.pop("bn_stats")  # the BatchNorm sums themselves are not written here
    with open_cache(_write_today(tmp_path / "c.h5", manifest)) as cache:
        assert cache.provenance.as_dict() == manifest == cache.manifest
        assert cache.provenance.settings_key == cache.settings_key == TODAY_SETTINGS_KEY
        assert cache.provenance.source.model == "test_efficientnet"
        assert cache.outputs[-1] == ("pre_logits", "none")


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["model"]["weights"].pop("sha256"), r"its manifest has no model\.weights\.sha256"),
    (lambda m: m["runtime"].update(precision=16), r"its manifest's runtime\.precision is int 16, not str"),
    (lambda m: m["input"].update(n_images="6"), r"its manifest's input\.n_images is str '6', not int"),
    (lambda m: m.update(outputs=["blocks.0"]), r"its manifest's outputs hold 'blocks\.0', not a layer/pooling name"),
    (lambda m: m.update(shard={"index": 3, "count": 3, "assignment": "a", "input_images": 1,
                               "input_ids_sha256": "x", "input_table_sha256": "y"}),
     r"its manifest's shard index 3 is outside 0\.\.2"),
])
def test_a_manifest_that_lacks_what_the_stages_read_is_refused_on_open(tmp_path, change, message):
    manifest = copy.deepcopy(TODAY)
    manifest.pop("bn_stats")
    path = forge_manifest(_write_today(tmp_path / "c.h5", manifest), change)
    with pytest.raises(CacheError, match=r"c\.h5 is damaged \(" + message):
        open_cache(path)


def test_a_typed_manifest_changed_by_replace_is_written_as_todays_json():
    m = CacheManifest.from_dict(TODAY)
    assert json.loads(manifest_json(m)) == TODAY
    changed = replace(m, runtime=replace(m.runtime, workers=2), bn_stats=None).with_entries(update={"added": 1})
    expected = {**TODAY, "runtime": {**TODAY["runtime"], "workers": 2}, "update": {"added": 1}}
    del expected["bn_stats"]
    assert changed.as_dict() == expected and m.as_dict() == TODAY
    assert changed.source == m.source and changed.settings_key == TODAY_SETTINGS_KEY
    with pytest.raises(ValueError, match="model are typed entries"):
        m.with_entries(model={})


def test_a_manifest_of_an_older_layerprobe_keeps_the_keys_no_type_names():
    older = copy.deepcopy(TODAY)
    older["input"]["from_the_future"] = [1, 2]
    del older["model"]["family"]
    m = CacheManifest.from_dict(older)
    assert m.model.family is None and m.input.extra == {"from_the_future": [1, 2]}
    assert m.as_dict() == {**older, "model": {**older["model"], "family": None}}


def test_a_derived_column_on_a_cache_of_today_adds_only_its_entry(tmp_path):
    from pipeline.cache import add_row_column

    manifest = copy.deepcopy(TODAY)
    manifest.pop("bn_stats")
    path = _write_today(tmp_path / "c.h5", manifest)
    about = {"threshold": 0.9, "output": "pre_logits/none"}
    add_row_column(path, "dup_cluster", np.array([0, 0, 1, 2, 3, 3]), about)
    with open_cache(path) as cache:
        assert cache.manifest == {**manifest, "columns": {"dup_cluster": about}}
        assert cache.provenance.columns == {"dup_cluster": about}
        assert cache.extras()["dup_clusters"] == {"clusters": 2, "rows_in_clusters": 4, **about}


def test_the_writer_refuses_a_typed_manifest_the_reader_would_refuse(tmp_path):
    manifest = copy.deepcopy(TODAY)
    manifest.pop("bn_stats")
    typed = CacheManifest.from_dict(manifest)
    broken = replace(typed, runtime=replace(typed.runtime, precision=None))
    with pytest.raises(CacheError, match=r"c\.h5 was not sealed: its manifest's runtime\.precision is NoneType"):
        _write_today(tmp_path / "c.h5", broken)
    assert not (tmp_path / "c.h5").exists()


def test_a_probe_or_results_copy_is_read_through_its_type():
    made = CacheManifest.from_dict(TODAY)
    copied = ProvenanceCopy.from_dict({**made.copy(), "input": made.input.summary(), "precision": "float32"})
    assert copied.source == made.source
    assert (copied.model.weights.source, copied.input.name, copied.input.n_images) == ("random-init", "images", 6)
    assert ProvenanceCopy.from_dict(made.copy()).source.precision is None
    with pytest.raises(CacheError, match=r"the probe: its manifest has no model\.weights\.sha256"):
        ProvenanceCopy.from_dict({"model": {"name": "x", "weights": {}}, "preprocessing": {}}, "the probe")


def test_extract_names_its_cache_by_the_code_source_key(image_folder, tiny_config, tmp_path):
    from pipeline.activations import extract
    from pipeline.activations.extract import _default_name
    from pipeline.inputs import from_folder

    result = extract(from_folder(image_folder), tiny_config(limit=4), cache_dir=tmp_path / "cache", progress=False)
    with open_cache(result.path) as cache:
        key = cache.provenance.source.settings_key(str(image_folder.resolve()))
        assert cache.settings_key == key == cache.provenance.settings_key
        assert key == cache_key(cache.provenance.source.settings(str(image_folder.resolve())))
    assert result.path.name == _default_name("images", "test_efficientnet", key)


def _shape(value):
    """The keys of a manifest, nested, without their values: the JSON's shape."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("members", "packages", "update")}
    return type(value).__name__ if value is not None else None


def test_extract_writes_the_manifest_in_the_shape_caches_have_today(image_folder, tiny_config, tmp_path):
    from pipeline.activations import extract
    from pipeline.inputs import from_folder

    result = extract(from_folder(image_folder), tiny_config(limit=6, bn_stats=True), out=tmp_path / "c.h5",
                     progress=False)
    with open_cache(result.path) as cache:
        written = cache.manifest
    added = {"fingerprints"}  # entries new caches carry that caches of the v2 format lack (older readers skip them)
    assert set(written) - set(TODAY) == added
    today = copy.deepcopy(TODAY)
    today["model"]["n_params"] = 1  # added since, for the cost column of a study across models
    today["config"]["precision"] = "auto"  # --precision, added since
    # how images were fed, since; in line with the threads a batch is spread over
    today["runtime"]["decoding"] = {"mode": "in line", "processes": 0, "how": "asked", "threads": 1}
    today["config"]["fold_batchnorm"] = True  # --fold-batchnorm, since; and what it did (not with --bn-stats)
    today["runtime"]["batchnorm_folding"] = {"folded": 0, "batchnorms": 1, "why_not": "--bn-stats"}
    assert _shape({k: v for k, v in written.items() if k not in added}) == _shape(today)
    assert written["bn_stats"]["members"].keys() == TODAY["bn_stats"]["members"].keys()
    assert written["runtime"]["packages"].keys() == TODAY["runtime"]["packages"].keys()


def test_a_writer_never_seals_a_manifest_the_reader_would_refuse(tmp_path):
    manifest = copy.deepcopy(TODAY)
    manifest.pop("bn_stats")
    del manifest["runtime"]["precision"]
    with pytest.raises(CacheError, match=r"c\.h5 was not sealed: its manifest has no runtime\.precision"):
        _write_today(tmp_path / "c.h5", manifest)
    assert not (tmp_path / "c.h5").exists()


# Provenance is read and compared only through pipeline/cache's types. Outside pipeline/cache/ no code reads
# the model, weights, preprocessing, precision or the manifest's parts by string key, and no code compares
# them by hand: CodeSource.differences does (and names what differs).
PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
STRING_KEY_READ = re.compile(
    r"""(\[|\.get\()\s*["'](model|weights|preprocessing|precision)["']"""
    r"""|manifest\w*\s*(\[|\.get\()\s*["'](input|runtime|bn_stats|columns|shard|key|created)["']""")
HAND_COMPARISON = re.compile(
    r"""(weights_sha256|weights\.sha256|preprocessing|precision|\.model\.name|source\.model)[\w.()\[\]"']*\s*(==|!=)"""
    r"""|(==|!=)\s*[\w.\[\]"']*(weights_sha256|weights\.sha256|preprocessing|precision)\b""")


def _provenance_breaches(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if not line.lstrip().startswith("#") and (STRING_KEY_READ.search(line) or HAND_COMPARISON.search(line))]


def test_the_scan_finds_the_reads_and_comparisons_it_forbids():
    planted = """weights = m["model"]["weights"]["source"]
pre = made.get("preprocessing")
bn = cache.manifest.get("bn_stats")
if a.source.weights_sha256 != b.source.weights_sha256:
if loaded.preprocessing.as_dict() == cached:
if codes.precision != probe.source.precision:
ok = probe.source.differences(found)
extras["bn_stats"]; data.ids_sha256 != results.data.get("ids_sha256")"""
    assert _provenance_breaches(planted) == planted.splitlines()[:6]


def test_no_provenance_is_read_by_string_key_or_compared_by_hand_outside_the_cache_stage():
    breaches = {str(path.relative_to(PACKAGE)): found for path in sorted(PACKAGE.rglob("*.py"))
                if path.parent.name != "cache" and (found := _provenance_breaches(path.read_text()))}
    assert breaches == {}, ("read provenance through CacheManifest / ProvenanceCopy and compare it with "
                            f"CodeSource.differences: {breaches}")
