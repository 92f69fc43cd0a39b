from __future__ import annotations

from pathlib import Path

import pytest

from generator.pipeline.load import load_spec, parse_file, to_plain


def test_positions_are_one_based_and_point_at_values(mini_spec: Path) -> None:
    spec, diags = load_spec(Path("spec"))
    assert diags == []
    comps = spec.one("components")
    assert comps is not None
    text = (mini_spec / "components.yaml").read_text().splitlines()
    loc = comps.locate(["components", "keystone", "port"])
    assert loc.file == "spec/components.yaml"
    assert text[loc.line - 1][loc.col - 1 :] == "5000"
    key = comps.locate(["components", "keystone"], key=True)
    assert text[key.line - 1][key.col - 1 :] == "keystone:"


def test_absent_path_points_at_deepest_existing_ancestor(mini_spec: Path) -> None:
    spec, _ = load_spec(Path("spec"))
    comps = spec.one("components")
    assert comps is not None
    assert comps.locate(["components", "keystone", "missing"]) == comps.locate(
        ["components", "keystone"]
    )


def test_duplicate_key_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("a: 1\nb: 2\na: 3\n")
    parsed, diags = parse_file(tmp_path, "x.yaml", "stack")
    assert parsed is None
    assert [str(d) for d in diags] == [
        f'{tmp_path.as_posix()}/x.yaml:3:1: YAML: duplicate key "a" (first at line 1, column 1)'
    ]


def test_a_byte_that_is_not_utf8_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    # Latin-1 "café" on line 3, after a UTF-8 "é" earlier on that line (columns count characters)
    (tmp_path / "x.yaml").write_bytes("a: 1\nb: 2\nc: é caf".encode() + b"\xe9\n")
    parsed, diags = parse_file(tmp_path, "x.yaml", "stack")
    assert parsed is None
    assert [str(d) for d in diags] == [
        f"{tmp_path.as_posix()}/x.yaml:3:9: not UTF-8 text: byte 0xE9 (invalid continuation byte)"
    ]


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("# only a comment\n")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    assert [d.message for d in parse_file(tmp_path, "e.yaml", "stack")[1]] == ["file is empty"]
    assert [d.message for d in parse_file(tmp_path, "l.yaml", "stack")[1]] == [
        "expected a mapping at the top of the file"
    ]


def test_to_plain_gives_builtin_types(mini_spec: Path) -> None:
    spec, _ = load_spec(Path("spec"))
    comps = spec.one("components")
    assert comps is not None
    plain = to_plain(comps.data)
    assert type(plain) is dict
    assert type(plain["components"]["keystone"]["port"]) is int
    assert type(plain["components"]["keystone"]["nodes"]) is list


def test_scalars_follow_the_yaml_1_2_core_schema(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "a: on\nb: yes\nc: 1_000\nd: 0o17\ne: 0x1F\nf: -5\ng: 2.5\nh: .inf\n"
        "i: ~\nj: True\nk: '3'\nl: 2026-12-03\nm: 0755\n"
    )
    parsed, diags = parse_file(tmp_path, "x.yaml", "stack")
    assert diags == [] and parsed is not None
    assert to_plain(parsed.data) == {
        "a": "on",
        "b": "yes",
        "c": "1_000",
        "d": 15,
        "e": 31,
        "f": -5,
        "g": 2.5,
        "h": float("inf"),
        "i": None,
        "j": True,
        "k": "3",
        "l": "2026-12-03",  # no timestamps in the core schema
        "m": 755,  # YAML 1.2: decimal, not octal
    }


def test_an_alias_bomb_is_refused_at_the_anchor_that_expands_too_far(tmp_path: Path) -> None:
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        rows.append(f"{name}: &{name} [{','.join(['*' + prev] * 10)}]")
    (tmp_path / "x.yaml").write_text("\n".join(rows) + "\n")
    parsed, diags = parse_file(tmp_path, "x.yaml", "stack")
    assert parsed is None
    # e holds 10^5 + ... nodes: under the limit; f holds over a million
    assert [str(d) for d in diags] == [
        f"{tmp_path.as_posix()}/x.yaml:6:4: YAML: this node expands through aliases to more "
        "than 200,000 nodes (an alias bomb?)"
    ]


def test_a_file_read_back_from_the_cache_is_the_file_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECSTACK_CACHE_DIR", str(tmp_path / "cache"))
    text = "a:\n  - {b: 1, c: [x, 2.5]}\n  - &n {d: null}\nk: *n\n'on': yes\n"
    (tmp_path / "x.yaml").write_text(text)
    fresh, diags = parse_file(tmp_path, "x.yaml", "stack")
    assert diags == [] and fresh is not None
    assert list((tmp_path / "cache" / "spec-yaml").iterdir())  # the parse was kept
    cached, _ = parse_file(tmp_path, "x.yaml", "stack")
    assert cached is not None
    assert (
        cached.data
        == fresh.data
        == {
            "a": [{"b": 1, "c": ["x", 2.5]}, {"d": None}],
            "k": {"d": None},
            "on": "yes",
        }
    )
    assert cached.values == fresh.values and cached.keys == fresh.keys
    assert cached.locate(["k", "d"]) == fresh.locate(["k", "d"])
    assert (cached.locate(["a", 0, "c", 1]).line, cached.locate(["a", 0, "c", 1]).col) == (2, 19)
    assert cached.locate(["on"], key=True).line == 5


def test_a_shared_step_is_used_with_the_keys_the_step_gives_itself(mini_spec: Path) -> None:
    (mini_spec / "steps.yaml").write_text(
        "steps:\n  login:\n    title: Authenticate\n    from: cli\n    to: keystone\n"
        "    via: http\n    operation: issueToken\n    summary: shared\n"
    )
    boot = mini_spec / "sequences" / "boot.yaml"
    text = boot.read_text()
    own = "      title: Authenticate\n      from: cli\n      to: keystone\n      via: http\n"
    own += "      operation: issueToken\n"
    assert own in text
    boot.write_text(text.replace(own, "      use: login\n      summary: its own\n"))
    spec, diags = load_spec(Path("spec"))
    assert diags == []
    seq = spec.one("sequence")
    assert seq is not None
    step = seq.data["sequence"]["steps"][1]
    assert step["title"] == "Authenticate" and step["via"] == "http" and "use" not in step
    assert step["number"] == 2 and step["summary"] == "its own"  # the step's own keys win
    assert step["then"][0]["to"] == "keystone-db"
    assert seq.locate(["sequence", "steps", 1, "via"]).line == 10  # the step that uses it
