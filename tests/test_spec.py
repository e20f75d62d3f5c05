"""Unit tests of the spec layer: YAML loading with positions, paths, hashing, schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ltrr.errors import Location, SpecError
from ltrr.spec import load_spec, load_spec_text
from ltrr.spec.loader import load_yaml, load_yaml_text

REPO = Path(__file__).resolve().parent.parent
MUSIC = REPO / "pipelines" / "music.yaml"

SPEC = """\
version: 1
name: tiny
catalog:
  path: data/items.parquet
  id: item_id
arms:
  - id: lexical
    use: bm25
    with:
      fields: {name: 3.0, tags: 1.0}
      k1: 0.9
  - id: titles
    use: bm25
    max_k: 200
    with:
      fields:
        title: 1.0
policy:
  budget: 100
  with:
    allocation: {lexical: 60, titles: 40}
"""


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_yaml_text(text, "f.yaml")
    return info.value


# --- loader: positions ------------------------------------------------------------------

def test_positions_of_nested_values_and_keys():
    data, smap = load_yaml_text(SPEC, "spec.yaml")
    assert data["arms"][0]["with"]["k1"] == 0.9
    # values: 1-based line and column of where the value starts
    assert smap.values[("name",)] == (2, 7)
    assert smap.values[("catalog", "path")] == (4, 9)
    assert smap.values[("arms", 0)] == (7, 5)                      # the item's first key
    assert smap.values[("arms", 0, "with", "fields")] == (10, 15)  # flow mapping '{'
    assert smap.values[("arms", 0, "with", "fields", "tags")] == (10, 33)
    assert smap.values[("arms", 0, "with", "k1")] == (11, 11)
    assert smap.values[("arms", 1, "with", "fields", "title")] == (17, 16)
    assert smap.values[("policy", "with", "allocation", "titles")] == (21, 39)
    # keys: where the key itself is written
    assert smap.keys[("arms", 0, "with", "k1")] == (11, 7)
    assert smap.keys[("arms", 1, "max_k")] == (14, 5)
    assert smap.keys[("policy", "with", "allocation", "titles")] == (21, 31)


def test_locate_falls_back_to_the_nearest_ancestor():
    _, smap = load_yaml_text(SPEC, "spec.yaml")
    assert smap.locate(("arms", 0, "with", "k1")) == Location("spec.yaml", 11, 11)
    assert smap.locate(("arms", 0, "with", "k1"), key=True) == Location("spec.yaml", 11, 7)
    # a key that is absent (e.g. a missing required one) points at its parent mapping,
    # which starts where its first key does
    assert smap.locate(("arms", 1, "with", "b")) == Location("spec.yaml", 16, 7)
    assert smap.locate(("output", "k")) == Location("spec.yaml", 1, 1)
    assert str(smap.locate(("arms", 0, "with", "k1"))) == "spec.yaml:11:11"


def test_positions_through_anchors_point_at_the_anchor():
    text = "a: &shared {b: 1}\nc: *shared\n"
    data, smap = load_yaml_text(text, "f.yaml")
    assert data == {"a": {"b": 1}, "c": {"b": 1}}
    assert smap.values[("c", "b")] == smap.values[("a", "b")] == (1, 16)


def test_bool_and_number_like_keys_keep_their_text():
    """YAML 1.1 reads `no:` as False; arm ids like 'no' or 'on' must survive as keys."""
    data, _ = load_yaml_text("allocation: {no: 5, on: 3, yes: 1, 0x10: 2}\n", "f.yaml")
    assert data == {"allocation": {"no": 5, "on": 3, "yes": 1, "0x10": 2}}


def test_non_scalar_and_null_keys_are_rejected():
    err = _error("? [a, b]\n: 1\n")
    assert err.message == "mapping keys must be plain strings"
    assert str(err.where) == "f.yaml:1:3"
    assert _error("~: 1\n").message == "mapping keys must be plain strings"


# --- loader: duplicate keys and merge keys ----------------------------------------------

def test_duplicate_key_in_block_mapping():
    err = _error("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n")
    assert err.message == "duplicate key 'c' (first defined on line 3)"
    assert str(err.where) == "f.yaml:5:3"
    assert err.hint == "remove one of the two entries"


def test_duplicate_key_in_flow_mapping_and_top_level():
    err = _error("with: {k1: 1, b: 0.4, k1: 2}\n")
    assert err.message.startswith("duplicate key 'k1'")
    assert str(err.where) == "f.yaml:1:23"
    err = _error("name: a\narms: []\nname: b\n")
    assert err.message == "duplicate key 'name' (first defined on line 1)"
    assert str(err.where) == "f.yaml:3:1"


def test_merge_keys_may_be_overridden_but_not_duplicated():
    text = ("base: &bm25 {fields: {name: 1.0}, k1: 0.9, b: 0.4}\n"
            "tuned:\n  <<: *bm25\n  k1: 1.2\n")
    data, smap = load_yaml_text(text, "f.yaml")
    assert data["tuned"] == {"fields": {"name": 1.0}, "k1": 1.2, "b": 0.4}
    assert smap.values[("tuned", "k1")] == (4, 7)       # the override, not the anchor
    assert smap.values[("tuned", "b")] == (1, 47)       # merged: where it is written
    err = _error(text + "  k1: 1.5\n")
    assert err.message == "duplicate key 'k1' (first defined on line 4)"
    assert str(err.where) == "f.yaml:5:3"


# --- loader: safe loading ---------------------------------------------------------------

@pytest.mark.parametrize("text, where, tag", [
    ("a: !!python/name:os.system\n", "f.yaml:1:4", "!!python/name:os.system"),
    ("a: !!python/object/apply:os.system ['echo pwned']\n", "f.yaml:1:4",
     "!!python/object/apply:os.system"),
    ("a: !!python/object:collections.OrderedDict {x: 1}\n", "f.yaml:1:4",
     "!!python/object:collections.OrderedDict"),
    ("a:\n  - !!python/object/new:os.system [ls]\n", "f.yaml:2:5",
     "!!python/object/new:os.system"),
    ("a: !custom 1\n", "f.yaml:1:4", "!custom"),
    ("a: !!set {x, y}\n", "f.yaml:1:4", "!!set"),
])
def test_tags_are_refused_not_constructed_or_dropped(text, where, tag):
    err = _error(text)
    assert err.message == f"YAML tag '{tag}' is not allowed in specs"
    assert str(err.where) == where
    assert "remove the tag" in err.hint


def test_python_tag_in_a_whole_spec_is_a_spec_error(tmp_path):
    spec = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    spec.write_text(SPEC.replace("id: item_id", f"id: !!python/object/apply:os.system "
                                                f"['touch {marker}']"))
    with pytest.raises(SpecError, match="is not allowed in specs"):
        load_spec(spec)
    assert not marker.exists()


def test_plain_yaml_types_still_load():
    data, _ = load_yaml_text("a: [1, 2.5, true, null, 'x']\nb: {c: d}\n", "f.yaml")
    assert data == {"a": [1, 2.5, True, None, "x"], "b": {"c": "d"}}


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "---\n", "~\n"])
def test_empty_specs(text):
    err = _error(text)
    assert err.message == "the spec is empty"
    assert str(err.where) == "f.yaml:1:1"


def test_second_document_is_named_as_such():
    err = _error("name: a\n---\nname: b\n")
    assert "second YAML document" in err.message
    assert str(err.where) == "f.yaml:2:1"


def test_unclosed_flow_collection_names_where_it_started():
    err = _error("a:\n  b: [1, 2\n  c: 3\n")
    assert err.message.startswith("YAML syntax error:")
    assert "started on line 2" in err.message


def test_file_errors(tmp_path):
    with pytest.raises(SpecError, match="spec file not found") as info:
        load_yaml(tmp_path / "missing.yaml")
    assert str(info.value.where) == str(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="cannot read spec"):
        load_yaml(bad)
    with pytest.raises(SpecError, match="the spec is a folder, not a regular file"):
        load_yaml(tmp_path)


# --- validation messages not covered by the broken corpus -------------------------------

def test_several_independent_errors_are_all_reported():
    text = SPEC.replace("budget: 100", "budget: 0").replace("max_k: 200", "max_k: -1")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    err = info.value
    assert [e.field for e in [err, *err.also]] == ["max_k", "budget"]
    assert [e.node for e in [err, *err.also]] == ["titles", "policy"]
    assert str(err).count("\n") == 1


def test_typo_of_optional_nested_key_gets_a_suggestion():
    with pytest.raises(SpecError) as info:
        load_spec_text(SPEC.replace("  id: item_id", "  idd: item_id"), "s.yaml")
    err = info.value
    assert (err.node, err.field, err.hint) == ("catalog", "idd", "did you mean 'id'?")
    assert str(err.where) == "s.yaml:5:3"


# --- paths resolve against the spec's folder --------------------------------------------

def _write(tmp_path: Path, text: str = SPEC) -> Path:
    spec = tmp_path / "project" / "pipelines" / "tiny.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(text)
    return spec


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    spec_file = _write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(spec_file)
    folder = spec_file.parent
    assert spec.base_dir == folder
    assert spec.resolve(spec.model.catalog.path) == folder / "data" / "items.parquet"
    assert spec.resolve("../shared/x.jsonl") == tmp_path / "project" / "shared" / "x.jsonl"
    assert spec.resolve("/abs/x.csv") == Path("/abs/x.csv")
    assert spec.resolve("~/x.csv") == Path.home() / "x.csv"
    assert spec.state_dir == folder / ".ltrr" / "tiny"


def test_a_relative_spec_path_is_made_absolute(tmp_path, monkeypatch):
    spec_file = _write(tmp_path)
    monkeypatch.chdir(tmp_path / "project")
    spec = load_spec("pipelines/tiny.yaml")
    assert spec.path == spec_file
    monkeypatch.chdir(tmp_path)                  # later cwd changes do not matter
    assert spec.resolve("data/items.parquet") == spec_file.parent / "data" / "items.parquet"
    # errors keep the path as the user typed it
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(SpecError) as info:
        load_spec("pipelines/nope.yaml")
    assert str(info.value.where) == "pipelines/nope.yaml"


def test_explicit_state_dir_and_text_specs(tmp_path):
    spec = load_spec_text(SPEC + "state_dir: ../state\n", tmp_path / "cfg" / "s.yaml")
    assert spec.state_dir == tmp_path / "state"
    assert spec.resolve("data/x") == tmp_path / "cfg" / "data" / "x"


def test_music_catalog_resolves_to_the_bundled_data():
    spec = load_spec(MUSIC)
    assert spec.resolve(spec.model.catalog.path) == (
        REPO / "examples" / "data" / "lastfm" / "artists.parquet")
    assert spec.resolve(spec.model.catalog.path).exists()


# --- Spec.hash --------------------------------------------------------------------------

def _hash(text: str) -> str:
    return load_spec_text(text, "s.yaml").hash


def test_hash_is_stable_for_the_same_content():
    h = _hash(SPEC)
    assert len(h) == 16 and int(h, 16) >= 0
    assert _hash(SPEC) == h
    assert load_spec_text(SPEC, "/other/folder/s.yaml").hash == h


def test_hash_ignores_formatting_comments_key_order_and_spelled_out_defaults():
    reformatted = """\
# same pipeline, written differently
name: tiny
policy: {with: {allocation: {titles: 40, lexical: 60}}, budget: 100}
catalog: {id: item_id, path: data/items.parquet}
arms:
  - {id: lexical, use: bm25, with: {k1: 0.9, fields: {tags: 1.0, name: 3.0}}}
  - id: titles
    use: bm25
    max_k: 200
    deadline_ms: 1000
    with: {fields: {title: 1.0}}
output: {k: 10}
merge: {use: union}
"""
    # (component params under `with:` are hashed as written — `1` vs `1.0` or an omitted
    # default would count as a change — so they are kept identical here)
    assert _hash(reformatted) == _hash(SPEC)


@pytest.mark.parametrize("old, new", [
    ("k1: 0.9", "k1: 1.2"),                        # a component param
    ("budget: 100", "budget: 120"),                 # a framework field
    ("{lexical: 60, titles: 40}", "{lexical: 50, titles: 50}"),
    ("name: 3.0, tags", "name: 2.0, tags"),         # a nested param
    ("use: bm25\n    max_k", "use: bm25\n    seeds: 5\n    max_k"),  # a default overridden
])
def test_hash_changes_when_a_value_changes(old, new):
    assert old in SPEC
    assert _hash(SPEC.replace(old, new, 1)) != _hash(SPEC)


def test_hash_is_the_same_in_another_process():
    code = f"from ltrr.spec import load_spec; print(load_spec({str(MUSIC)!r}).hash)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == load_spec(MUSIC).hash


# --- ltrr schema ------------------------------------------------------------------------

def _schema(capsys, *args: str) -> dict:
    from ltrr.cli import main

    assert main(["schema", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_schema_is_json_schema_with_the_top_level_keys(capsys):
    schema = _schema(capsys)
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False
    props = schema["properties"]
    for key in ("version", "name", "description", "requires", "catalog", "state_dir",
                "slotters", "arms", "policy", "merge", "ranker", "output", "log"):
        assert key in props, key
    assert {"name", "catalog", "arms", "policy"} <= set(schema["required"])
    arm = schema["$defs"]["ArmSpec"]
    assert {"id", "use", "with", "from", "deadline_ms", "max_k", "seeds"} <= set(arm["properties"])
    assert "with_" not in arm["properties"] and "from_" not in arm["properties"]
    assert arm["properties"]["use"]["description"]


def test_schema_validates_specs_when_jsonschema_is_installed(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema(capsys)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    import yaml

    music = yaml.safe_load(MUSIC.read_text())
    assert list(validator.iter_errors(music)) == []
    broken = dict(music, ouptut={"k": 10})
    assert any("ouptut" in e.message for e in validator.iter_errors(broken))
    assert list(validator.iter_errors(dict(music, arms=[])))


def test_schema_with_components(capsys):
    schema = _schema(capsys, "--components")
    components = schema["x-ltrr-components"]
    assert "arm:bm25" in components and "policy:static" in components
    assert "k1" in components["arm:bm25"]["properties"]


def test_requires_checks_versions_and_quotes_the_install_hint(tmp_path):
    from ltrr.compiler import compile_spec
    from ltrr.errors import CompileError
    from ltrr.spec import load_spec_text

    base = ("name: t\ncatalog: {path: c.parquet}\narms: [{id: a, use: bm25, with: {fields: "
            "{name: 1}}}]\npolicy: {budget: 10}\n")
    ok = load_spec_text(base + "requires: ['pydantic>=2']\n", tmp_path / "s.yaml")
    compile_spec(ok)
    too_new = load_spec_text(base + "requires: ['pydantic>=99']\n", tmp_path / "s.yaml")
    with pytest.raises(CompileError) as err:
        compile_spec(too_new)
    assert "needs 'pydantic>=99'" in str(err.value)
    assert "pip install --upgrade 'pydantic>=99'" in str(err.value)
    bad = load_spec_text(base + "requires: ['not a requirement!!']\n", tmp_path / "s.yaml")
    with pytest.raises(CompileError, match="not a valid requirement"):
        compile_spec(bad)


def test_discriminated_union_errors_name_the_kind_and_drop_the_tag_from_the_path(tmp_path):
    from ltrr.compiler import compile_spec
    from ltrr.errors import CompileError
    from ltrr.spec import load_spec_text

    def spec(relation: str):
        return load_spec_text(
            "name: t\ncatalog: {path: c.parquet}\narms:\n  - id: g\n    use: graph\n"
            f"    with:\n      relations:\n        - {relation}\npolicy: {{budget: 10}}\n",
            tmp_path / "s.yaml")

    with pytest.raises(CompileError) as err:
        compile_spec(spec("{kind: co_ocurrence, path: p.parquet, group: u, entity: a}"))
    assert "unknown kind 'co_ocurrence'" in str(err.value)
    assert "did you mean 'co_occurrence'?" in str(err.value)
    assert err.value.field == "with.relations.0"
    with pytest.raises(CompileError) as err:
        compile_spec(spec("{kind: co_occurrence, path: p.parquet, group: u, entity: a, alpha: 1}"))
    assert err.value.field == "with.relations.0.alpha"
    assert "s.yaml:8:" in str(err.value)


@pytest.mark.parametrize("requirement", [
    "evil-pkg-not-installed @ file:///x';touch${IFS}pwned;'",
    "evil-pkg-not-installed @ https://e.x/a$(touch${IFS}pwned)",
    "pydantic>=99; python_version > \"1';touch pwned;'\"",
])
def test_requires_install_hint_is_safe_to_paste_into_a_shell(tmp_path, requirement):
    """The `pip install ...` hint is pasted into a shell: a crafted requirement must stay
    one argument and never run a command (the hint used to wrap it in bare '...')."""
    from ltrr.compiler import compile_spec
    from ltrr.errors import CompileError

    base = ("name: t\ncatalog: {path: c.parquet}\narms: [{id: a, use: bm25, with: {fields: "
            "{name: 1}}}]\npolicy: {budget: 10}\n")
    quoted = requirement.replace("\\", "\\\\").replace('"', '\\"')
    spec = load_spec_text(base + f'requires: ["{quoted}"]\n', tmp_path / "s.yaml")
    with pytest.raises(CompileError) as err:
        compile_spec(spec)
    command = err.value.hint
    assert command.startswith("pip install ")
    # Paste the hint into a real shell whose `pip` only prints its arguments.
    shell = f"pip() {{ printf '%s\\n' \"$@\"; }}\n{command}\n"
    proc = subprocess.run(["sh", "-c", shell], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert not (tmp_path / "pwned").exists(), command
    args = proc.stdout.splitlines()
    assert args[-1] == requirement
    assert args[0] == "install"


# --- bounded loading: size, nesting, aliases, numbers, file types ----------------------

def _ltrr() -> list[str]:
    script = Path(sys.executable).parent / "ltrr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ltrr.cli"]


def _validate(spec: str | Path, cwd: Path = REPO) -> str:
    """`ltrr validate` in a subprocess: exit 1, one `error:` line, no traceback. The
    generous timeout turns a hang into a failure (a refusal takes well under a second)."""
    proc = subprocess.run([*_ltrr(), "validate", str(spec)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_a_spec_larger_than_the_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("version: 1\nname: big\ndescription: '")
        f.truncate(50_000_000)                    # 50 MB (sparse: cheap to make)
    line = _validate(big)
    assert line.startswith(f"error: {big}: ")
    assert "is 50 MB; at most 1 MB is allowed" in line


def test_spec_text_larger_than_the_limit_is_refused():
    with pytest.raises(SpecError, match="at most 1 MB"):
        load_yaml_text("a: '" + "x" * (1 << 20) + "'\n", "f.yaml")


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_spec_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, kind):
    """A folder was a traceback-free error already; a FIFO blocked (and ignored Ctrl-C),
    /dev/zero never ended: all are refused by file type, before any read."""
    import os

    if kind == "folder":
        path, what = tmp_path, "a folder"
    elif kind == "fifo":
        path, what = tmp_path / "spec.yaml", "a named pipe"
        os.mkfifo(path)
    else:
        path, what = Path("/dev/zero"), "a device"
    line = _validate(path)
    assert line.startswith(f"error: {path}: ") and what in line, line
    assert "regular file" in line


def test_aliases_may_not_contain_themselves():
    err = _error("a: &a [1, *a]\n")
    assert "alias '*a' is used inside the value it names" in err.message
    assert str(err.where) == "f.yaml:1:11"
    err = _error("a: &a {b: 1, <<: *a}\n")
    assert "alias '*a'" in err.message


def test_nesting_through_aliases_is_bounded_too():
    """Each level below 64 in the text, but aliases stack them: 10 x 20 levels deep."""
    lines, prev = [], None
    for i in range(10):
        inner = f"*a{prev}" if prev is not None else "1"
        lines.append(f"x{i}: &a{i} " + "[" * 20 + inner + "]" * 20)
        prev = i
    err = _error("\n".join(lines) + "\n")
    assert "nested deeper than 64 levels" in err.message
    assert err.where.line is not None


def test_long_numbers_are_refused_in_keys_and_values():
    assert "a number of 200 characters" in _error("a: " + "1" * 200 + "\n").message
    assert "a number of 200 characters" in _error("1" * 200 + ": a\n").message
    assert "a number of 150 characters" in _error("a: 0." + "1" * 148 + "\n").message
    data, _ = load_yaml_text("a: '" + "1" * 200 + "'\nb: 12345678901234567890\n", "f.yaml")
    assert data == {"a": "1" * 200, "b": 12345678901234567890}     # quoted: a string


def test_the_limits_leave_real_specs_alone():
    for spec in sorted((REPO / "pipelines").glob("*.yaml")):
        load_spec(spec)
    data, _ = load_yaml_text("base: &b {x: 1, y: [1, 2]}\nuse: {<<: *b, z: *b}\n", "f.yaml")
    assert data["use"] == {"x": 1, "y": [1, 2], "z": {"x": 1, "y": [1, 2]}}


def test_values_are_counted_while_composing_not_only_after():
    """A long flat list is refused once it passes the limit, not after parsing it all."""
    err = _error("a: [" + ",".join(["1"] * 30_000) + "]\n")
    assert "the spec holds more than 20,000 values" in err.message
    # nodes: the root mapping, the key, the list, then values: the 19,998th passes 20,000
    assert str(err.where) == f"f.yaml:1:{5 + 2 * (19_998 - 1)}"
