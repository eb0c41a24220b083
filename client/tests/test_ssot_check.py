"""``ssot-check`` on a fixture tree whose lines that must be flagged say so
(``# expect: CODE``), plus the command line: output format, exit codes, allow-list."""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from auth_service_client.cli import main
from auth_service_client.ssot import AllowList, check_paths, check_source

CLIENT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "ssot"
_EXPECT = re.compile(r"#\s*expect:\s*((?:SSOT\d{3}\s*)+)$")


def expected(root: Path) -> Counter[tuple[str, int, str]]:
    """Every ``# expect: CODE [CODE]`` marker under ``root`` as (relative path, line, code)."""
    found: Counter[tuple[str, int, str]] = Counter()
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            marker = _EXPECT.search(line)
            for code in marker.group(1).split() if marker else ():
                found[(path.relative_to(root).as_posix(), number, code)] += 1
    return found


def actual(root: Path) -> Counter[tuple[str, int, str]]:
    findings = check_paths([root])
    return Counter((Path(f.path).relative_to(root).as_posix(), f.line, f.code) for f in findings)


def run(*args: str, cwd: Path = CLIENT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "auth_service_client.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def test_every_marked_line_is_flagged_and_nothing_else() -> None:
    want = expected(FIXTURES)
    assert sum(want.values()) > 50  # the markers were read
    assert {code for _, _, code in want} == {"SSOT001", "SSOT002", "SSOT003", "SSOT004"}
    assert actual(FIXTURES) == want


def test_the_clean_files_have_no_finding() -> None:
    assert check_paths([FIXTURES / "clean"]) == []
    done = run("ssot-check", str(FIXTURES / "clean"))
    assert (done.returncode, done.stdout) == (0, "")


def test_exact_output_lines_and_exit_1() -> None:
    done = run("ssot-check", "bad/algorithms.py", cwd=FIXTURES)  # no .ssot-allow there
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "bad/algorithms.py:4:7: SSOT004 names an HMAC JWT algorithm: 'HS256'",
        "bad/algorithms.py:5:21: SSOT004 names an HMAC JWT algorithm: 'HS384'",
        "bad/algorithms.py:5:30: SSOT004 names an HMAC JWT algorithm: 'hs512'",
        "bad/algorithms.py:10:9: SSOT004 names an HMAC JWT algorithm: 'HS512'",
    ]
    assert "4 finding(s)" in done.stderr


def test_aliases_and_lines_of_the_calls() -> None:
    source = "import jwt as j\nfrom jwt import decode as d\nj.decode(t)\nd(t)\nx.jwt.decode(t)\n"
    lines = [(f.line, f.code) for f in check_source(source, "m.py")]
    assert lines == [(1, "SSOT001"), (2, "SSOT001"), (3, "SSOT002"), (4, "SSOT002")]


def test_a_file_that_does_not_parse_is_reported_not_crashed_on(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "clean", tmp_path / "tree")
    (tmp_path / "tree" / "broken.py").write_text("def f(:\n    pass\n")
    (tmp_path / "tree" / "nul.py").write_bytes(b"x = 1\0\n")
    (tmp_path / "tree" / "legacy.py").write_text("import jwt\nprint 'py2'\n")
    done = run("ssot-check", "tree", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        ["tree/broken.py:1:1", "SSOT000 file could not be parsed"],
        ["tree/legacy.py:2:1", "SSOT000 file could not be parsed"],
        ["tree/nul.py:1:1", "SSOT000 file could not be parsed"],
    ]


def test_hidden_directories_and_virtualenvs_are_skipped(tmp_path: Path) -> None:
    for folder in (".venv/lib", "env/lib", "build/lib", "node_modules/x", "__pycache__", "src"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "m.py").write_text("import jwt\n")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    assert [f.path for f in check_paths([tmp_path])] == [str(tmp_path / "src" / "m.py")]


def test_the_allow_list(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "bad", tmp_path / "bad")
    total = sum(expected(tmp_path).values())
    allow = tmp_path / "allow"
    allow.write_text(
        "# exceptions\n"
        "bad/imports.py            # the whole file\n"
        "./bad/calls.py SSOT001    # its imports only\n"
        "bad/hardcoded_*.py:7      # one line (JWT_SECRET), any code\n"
        "bad/algorithms.py:5 SSOT004\n"
        "bad/algorithms.py:4 SSOT001  # the wrong code: still reported\n"
    )
    done = run("ssot-check", "bad", "--allow", str(allow), cwd=tmp_path)
    assert done.returncode == 1
    reported = [line.split(": ")[0] for line in done.stdout.splitlines()]
    assert not any(
        r.startswith(("bad/imports.py", "bad/hardcoded_secrets.py:7:")) for r in reported
    )
    assert not any(r.startswith("bad/algorithms.py:5:") for r in reported)
    assert "bad/algorithms.py:4:7" in reported
    calls = [r for r in reported if r.startswith("bad/calls.py")]
    assert len(calls) == 10  # the SSOT002 calls, none of its SSOT001 imports
    assert len(reported) < total
    allow.write_text("bad/*\n")
    assert run("ssot-check", "bad", "--allow", str(allow), cwd=tmp_path).returncode == 0
    # the default: ./.ssot-allow
    (tmp_path / ".ssot-allow").write_text("bad/*\n")
    assert run("ssot-check", "bad", cwd=tmp_path).returncode == 0


def test_allow_list_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("import jwt\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "allow").write_text("../code/m.py\n")  # not under conf/: as given
    (tmp_path / "allow").write_text("code/m.py:1 SSOT001\n")
    assert run("ssot-check", "code", "--allow", "allow", cwd=tmp_path).returncode == 0
    entries = AllowList.read(tmp_path / "allow").entries
    assert [(e.pattern, e.line, set(e.codes)) for e in entries] == [("code/m.py", 1, {"SSOT001"})]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ssot-check"],
        ["nope"],
        ["ssot-check", "does/not/exist"],
        ["ssot-check", "src", "--allow", "does/not/exist"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).returncode == 2


def test_a_malformed_allow_list_exits_2(tmp_path: Path) -> None:
    (tmp_path / "allow").write_text("src/x.py NOT_A_CODE\n")
    done = run("ssot-check", "src", "--allow", str(tmp_path / "allow"))
    assert done.returncode == 2
    assert "allow:1:" in done.stderr


def test_the_library_itself_passes_with_its_allow_list(capsys: pytest.CaptureFixture[str]) -> None:
    """The library is the source of truth: only the modules its allow-list names may use PyJWT
    (``client/.ssot-allow``)."""
    status = main(["ssot-check", str(CLIENT / "src"), "--allow", str(CLIENT / ".ssot-allow")])
    assert status == 0, capsys.readouterr().out


def test_the_console_script_is_declared() -> None:
    script = shutil.which("auth-service-client", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the package is not installed as a distribution here")
    done = subprocess.run([script, "ssot-check", str(FIXTURES / "clean")], check=False)
    assert done.returncode == 0
