"""A corpus of broken specs (tests/broken/*.yaml): each must be rejected with exact diagnostics.

A case is a list of edits applied to a fresh copy of tests/fixtures/mini-spec at
`tmp_path/spec`, plus every diagnostic line `specstack validate spec` must print:

    description: what the case breaks
    edits:
      - {file: F, replace: "exact text, found exactly once", with: "new text"}
      - {file: F, content: "whole new text"}     # overwrite or create
      - {file: F, delete: true}
    expect: ["spec/F:LINE:COL: message", ...]
    xfail: why the validator does not yet say this   # optional: a known validator weakness
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from generator.cli import main

HERE = Path(__file__).resolve().parent
MINI = HERE / "fixtures" / "mini-spec"
CASES = sorted((HERE / "broken").glob("*.yaml"))
CASE_KEYS = {"description", "edits", "expect", "xfail"}


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = YAML(typ="safe").load(path.read_text("utf-8"))
    assert set(case) <= CASE_KEYS, f"{path.name}: unknown keys {set(case) - CASE_KEYS}"
    assert case["description"] and case["edits"] and case["expect"], f"{path.name}: incomplete"
    return case


def apply_edit(spec: Path, edit: dict[str, Any]) -> None:
    target = spec / edit["file"]
    if edit.get("delete"):
        assert target.is_file(), f"cannot delete {edit['file']}: no such file"
        target.unlink()
    elif "content" in edit:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(edit["content"], encoding="utf-8")
    else:
        text = target.read_text("utf-8")
        count = text.count(edit["replace"])
        if count != 1:
            pytest.fail(
                f"{edit['file']}: replace text found {count} times, not once: {edit['replace']!r}"
            )
        target.write_text(text.replace(edit["replace"], edit["with"]), encoding="utf-8")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def plural(n: int) -> str:
    return f"{n} problem{'s' if n != 1 else ''}"


def _param(path: Path) -> Any:
    reason = load_case(path).get("xfail")
    # raises=Exception: a broken edit (pytest.fail) still fails; strict: a fix must drop the mark.
    marks = [pytest.mark.xfail(reason=reason, raises=Exception, strict=True)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("case_path", [_param(p) for p in CASES])
def test_broken_spec_is_rejected(
    case_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = load_case(case_path)
    shutil.copytree(MINI, tmp_path / "spec")
    for edit in case["edits"]:
        apply_edit(tmp_path / "spec", edit)
    monkeypatch.chdir(tmp_path)
    expect: list[str] = case["expect"]

    code, out, err = run(["validate", "spec"], capsys)
    assert (code, out) == (2, "")
    assert err[:-1] == expect
    assert err[-1] == f"{plural(len(expect))} in spec/"

    code, out, err = run(["generate", "--spec", "spec", "--output", "out"], capsys)
    assert (code, out) == (2, "")
    assert err[:-1] == expect
    assert err[-1] == f"{len(expect)} problem(s); nothing written to out/"
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "spec"] == [], "staging left behind"


def test_mini_spec_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(MINI, tmp_path / "spec")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["validate", "spec"], capsys)
    assert (code, err) == (0, [])
    assert out == (
        "spec/ is valid: 9 components, 3 operations in 2 APIs, 2 messages, 7 steps in 1 sequences\n"
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
