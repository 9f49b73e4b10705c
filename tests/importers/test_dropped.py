"""Every opcode of every pickle in a file is audited, not only what the result holds.

``pickle.load`` runs every call of a stream, wherever its result goes: dropped with
POP / POP_MARK, memoised and never used, left on the stack under the returned value,
or in a second pickle after the first STOP. Each payload below creates ``canary``
under plain pickle (the positive control proves it in a real subprocess); ``scan``
must not call any of them safe (the CLI exits non-zero), ``convert`` must refuse
each with a SafepointError, and no canary may appear.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from convert_payloads import DROPPED, DROPPED_LIVE, g0, u

import safepoint as sp
from safepoint.cli.main import _register_commands, cli
from safepoint.importers.pickle_parser import _DISPATCH

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register_commands()
    return CliRunner()


def _assert_refused(tmp: Path, src: Path, runner: CliRunner) -> sp.ScanResult:
    [res] = sp.scan([src])
    assert res.verdict != "safe", res
    assert res.problems or res.untrusted
    cli_res = runner.invoke(cli, ["scan", str(src)])
    assert cli_res.exit_code != 0, cli_res.output
    assert "SAFE" not in cli_res.output
    dst = tmp / "out.sp"
    with pytest.raises(sp.SafepointError):
        sp.convert(src, dst)
    assert not dst.exists()
    assert not (tmp / "canary").exists()
    return res


@pytest.mark.slow
def test_positive_control_dropped_payloads_are_live(tmp: Path) -> None:
    """Plain pickle runs each of them: ``pickle.load`` in a loop over the file, as a
    loader of several objects does (in a throwaway process)."""
    code = (
        "import pickle, sys, warnings; warnings.simplefilter('ignore')\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import convert_payloads as payloads\n"
        "for name in payloads.DROPPED_LIVE:\n"
        "    c = sys.argv[1] + '/' + name\n"
        "    f = __import__('io').BytesIO(payloads.DROPPED[name](c))\n"
        "    while True:\n"
        "        try:\n"
        "            pickle.load(f)\n"
        "        except Exception:\n"
        "            break\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp)], check=True, timeout=120)
    assert sorted(p.name for p in tmp.iterdir()) == sorted(DROPPED_LIVE)


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_dropped_call_is_seen(tmp: Path, runner: CliRunner, name: str) -> None:
    src = tmp / "evil.pkl"
    src.write_bytes(DROPPED[name](str(tmp / "canary")))
    _assert_refused(tmp, src, runner)


def test_dropped_names_are_listed(tmp: Path) -> None:
    src = tmp / "evil.pkl"
    for name in ("dropped_pop", "dropped_pop_mark", "memo_only", "leftover_stack"):
        src.write_bytes(DROPPED[name](str(tmp / "canary")))
        [res] = sp.scan([src])
        assert res.untrusted == ["os.system"], name
        assert any("does not contain" in p for p in res.problems), res.problems
    src.write_bytes(DROPPED["fickling_exec_first"](str(tmp / "canary")))
    [res] = sp.scan([src])
    assert res.untrusted == ["builtins.exec"]
    src.write_bytes(DROPPED["leftover_stack"](str(tmp / "canary")))
    [res] = sp.scan([src])
    assert any("left on the stack" in p for p in res.problems)


def test_concatenated_pickle_is_reported_with_its_names(tmp: Path) -> None:
    src = tmp / "two.pkl"
    src.write_bytes(DROPPED["concatenated_requests"](str(tmp / "canary")))
    [res] = sp.scan([src])
    assert res.verdict == "refused"
    assert "requests.get" in res.untrusted
    assert any("2 pickle streams" in p for p in res.problems), res.problems
    with pytest.raises(sp.FormatError, match="2 pickle streams"):
        sp.convert(src, tmp / "out.sp")


def test_trailing_bytes_are_reported(tmp: Path) -> None:
    src = tmp / "t.pkl"
    src.write_bytes(DROPPED["trailing_bytes"](""))
    [res] = sp.scan([src])
    assert res.verdict == "refused"
    assert any("after the end of the pickle" in p for p in res.problems), res.problems
    # a single byte is enough
    src.write_bytes(pickle.dumps({"ok": 1}, protocol=2) + b"\n")
    with pytest.raises(sp.FormatError, match="after the end of the pickle"):
        sp.convert(src, tmp / "out.sp")


def test_trusted_but_dropped_is_still_refused(tmp: Path) -> None:
    """A dropped call of an allowlisted class is no pickle writer's output either."""
    src = tmp / "d.pkl"
    src.write_bytes(b"\x80\x02" + g0("collections", "OrderedDict") + b")R0}.")
    [res] = sp.scan([src])
    assert res.verdict == "refused" and not res.untrusted
    with pytest.raises(sp.FormatError, match="does not contain"):
        sp.convert(src, tmp / "out.sp")


def test_popped_but_reachable_values_are_not_misreported(tmp: Path) -> None:
    """CPython's pickler writes POP_MARK for recursive tuples: the popped values are in
    the result, so the only refusal is the cycle (safepoint files hold no cycles)."""
    a: list[object] = []
    t = (a,)
    a.append(t)
    for protocol in (0, 2, 4):
        data = pickle.dumps(t, protocol=protocol)
        assert any(op.name in ("POP", "POP_MARK") for op, _, _ in pickletools.genops(data))
        src = tmp / "r.pkl"
        src.write_bytes(data)
        [res] = sp.scan([src])
        assert res.verdict == "safe", res.problems
        with pytest.raises(sp.FormatError, match="cycle"):
            sp.convert(src, tmp / "out.sp")


def test_every_opcode_is_interpreted() -> None:
    """No opcode of protocols 0-5 falls through to a default: each has its handler."""
    inline = {".": "STOP"}
    for op in pickletools.opcodes:
        assert op.code in inline or ord(op.code) in _DISPATCH, op.name


@pytest.mark.parametrize(
    ("stream", "what"),
    [
        # SETITEMS / APPENDS on an instance would call its own __setitem__ / extend
        (
            b"\x80\x02"
            + g0("sklearn.linear_model._base", "LinearRegression")
            + b")\x81("
            + u("k")
            + u("v")
            + b"u.",
            "SETITEMS",
        ),
        (
            b"\x80\x02" + g0("sklearn.linear_model._base", "LinearRegression") + b")\x81(K\x01e.",
            "APPENDS",
        ),
        (b"\x80\x02" + g0("collections", "OrderedDict") + b")R}b.", "BUILD"),
        (b"\x80\x02" + g0("builtins", "list") + b")R}b.", "BUILD"),
    ],
)
def test_container_opcodes_on_objects_are_refused_by_scan(
    tmp: Path, stream: bytes, what: str
) -> None:
    src = tmp / "x.pkl"
    src.write_bytes(stream)
    [res] = sp.scan([src])
    assert res.verdict == "refused", res
    assert any(what in p for p in res.problems), res.problems
    with pytest.raises(sp.FormatError):
        sp.convert(src, tmp / "out.sp")


# -- containers ------------------------------------------------------------------------
def _joblib_concatenated(tmp: Path, canary: str, compress: object) -> bytes:
    """A real joblib file whose pickle stream is followed by a second, hostile one."""
    plain = tmp / "plain.joblib"
    joblib.dump({"w": np.arange(5.0)}, plain)
    stream = plain.read_bytes() + DROPPED["dropped_pop"](canary)
    if compress is None:
        return stream
    return {
        "zlib": zlib.compress,
        "gzip": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
    }[str(compress)](stream)


@pytest.mark.parametrize("compress", [None, "zlib", "gzip", "bz2", "xz"])
def test_joblib_concatenated(tmp: Path, runner: CliRunner, compress: object) -> None:
    src = tmp / "m.joblib"
    src.write_bytes(_joblib_concatenated(tmp, str(tmp / "canary"), compress))
    res = _assert_refused(tmp, src, runner)
    assert "os.system" in res.untrusted
    assert any("2 pickle streams" in p for p in res.problems)


@pytest.mark.parametrize("kind", ["zlib", "gzip"])
def test_second_compressed_member_is_read(tmp: Path, runner: CliRunner, kind: str) -> None:
    """joblib's reader goes on into a second compressed member, so does the import."""
    comp = zlib.compress if kind == "zlib" else gzip.compress
    first = comp(pickle.dumps({"ok": 1}, protocol=4))
    second = comp(DROPPED["dropped_pop"](str(tmp / "canary")))
    src = tmp / "m.joblib"
    src.write_bytes(first + second)
    res = _assert_refused(tmp, src, runner)
    assert "os.system" in res.untrusted


def test_joblib_object_array_nested_stream_dropped(tmp: Path, runner: CliRunner) -> None:
    """joblib's nested pickle (object arrays) is audited the same way."""
    src = tmp / "o.joblib"
    joblib.dump({"o": np.array([1.5, "x"], dtype=object)}, src)
    data = src.read_bytes()
    # the nested stream of the object array is a pickle of its own that ends with the
    # array's BUILD then STOP; put a dropped call right before that STOP
    nested_start = data.index(b"\x80", data.index(b"NumpyArrayWrapper") + 1)
    nested_end = data.index(b"b.", nested_start) + 1
    evil = data[:nested_end] + g0("os", "system") + u("touch " + str(tmp / "canary"))
    evil += b"\x85R0" + data[nested_end:]
    src.write_bytes(evil)
    res = _assert_refused(tmp, src, runner)
    assert "os.system" in res.untrusted
    # positive control: joblib itself runs it (in a throwaway process)
    code = "import joblib, sys; joblib.load(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(src)], check=True, timeout=120)
    assert (tmp / "canary").exists()


def _zip(members: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return bio.getvalue()


def test_zip_member_concatenated(tmp: Path, runner: CliRunner) -> None:
    src = tmp / "m.zip"
    src.write_bytes(_zip({"model.pkl": DROPPED["concatenated"](str(tmp / "canary"))}))
    res = _assert_refused(tmp, src, runner)
    assert "os.system" in res.untrusted
    assert res.members[0].verdict == "refused"


def test_skops_with_a_pickle_member_schema_does_not_name(tmp: Path, runner: CliRunner) -> None:
    sio = pytest.importorskip("skops.io")
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    bio = io.BytesIO()
    sio.dump(model, bio)
    with zipfile.ZipFile(io.BytesIO(bio.getvalue())) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    src = tmp / "m.skops"
    src.write_bytes(_zip(members))
    assert sp.scan([src])[0].verdict == "safe"
    members["extra.pkl"] = DROPPED["dropped_pop"](str(tmp / "canary"))
    src.write_bytes(_zip(members))
    res = _assert_refused(tmp, src, runner)
    assert any("extra.pkl" in p for p in res.problems), res.problems
    assert "os.system" in res.untrusted


def test_real_process_cli_dropped(tmp: Path) -> None:
    """fickling's insertion through the real CLI in a fresh process."""
    src = tmp / "evil.pkl"
    src.write_bytes(DROPPED["fickling_exec_first"](str(tmp / "canary")))
    for args in (["convert", str(src), str(tmp / "out.sp")], ["scan", str(src)]):
        proc = subprocess.run(
            [sys.executable, "-m", "safepoint.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SAFEPOINT_QUIET": "1"},
        )
        assert proc.returncode == 1, proc.stderr
        assert "builtins.exec" in proc.stdout + proc.stderr
    assert not (tmp / "canary").exists()
    assert not (tmp / "out.sp").exists()


def test_scan_json_says_what_was_checked(tmp: Path, runner: CliRunner) -> None:
    src = tmp / "ok.pkl"
    src.write_bytes(pickle.dumps({"a": np.arange(3)}, protocol=5))
    res = runner.invoke(cli, ["scan", str(src), "--json"])
    assert res.exit_code == 0, res.output
    [data] = json.loads(res.output)
    assert data["verdict"] == "safe"
    assert data["checked"]["pickle_streams"] == 1
    assert data["checked"]["opcodes"] > 0


def test_protocol0_pickle_without_a_usual_first_opcode(tmp: Path, runner: CliRunner) -> None:
    """A protocol 0 pickle may start with any opcode (FLOAT, then POP): named like a
    pickle, it is examined inside folders and zip files, not skipped."""
    evil = b"F1.0\n0" + g0("os", "system") + b"(S'touch " + str(tmp / "canary").encode()
    evil += b"'\ntR."
    folder = tmp / "models"
    folder.mkdir()
    (folder / "evil.pkl").write_bytes(evil)
    res = runner.invoke(cli, ["scan", str(folder)])
    assert res.exit_code == 1, res.output
    assert "os.system" in res.output
    src = tmp / "m.zip"
    src.write_bytes(_zip({"data.pkl": pickle.dumps({"ok": 1}), "extra.pkl": evil}))
    [zres] = sp.scan([src])
    assert zres.verdict != "safe"
    assert "os.system" in zres.untrusted
    assert not (tmp / "canary").exists()


def test_scan_says_what_it_did_not_check(tmp: Path, runner: CliRunner) -> None:
    """A safe verdict never covers what was not examined: zip members that are not
    pickles, a safepoint file's contents, files skipped in folders."""
    folder = tmp / "models"
    folder.mkdir()
    (folder / "m.zip").write_bytes(
        _zip({"data.pkl": pickle.dumps({"ok": 1}), "README": b"# read me\n"})
    )
    sp.dump({"a": 1}, folder / "m.sp")
    (folder / "notes.txt").write_text("# nothing\n")
    results = sp.scan([folder])
    by_name = {Path(r.path).name: r for r in results}
    assert [r.verdict for r in results] == ["safe", "safe"]
    assert any("README" in n for n in by_name["m.zip"].not_checked)
    assert by_name["m.zip"].checked["zip_members"] == 1
    assert any("types table" in n for n in by_name["m.sp"].not_checked)
    assert [Path(p).name for p in results.skipped] == ["notes.txt"]
    res = runner.invoke(cli, ["scan", str(folder)])
    assert res.exit_code == 0, res.output
    assert "not checked: 1 zip member(s) that are not pickle or joblib streams: README" in (
        res.output
    )
    assert "skipped 1 file(s)" in res.output


_CALL = g0("os", "system") + u("touch canary") + b"\x85R"
_LR = g0("sklearn.linear_model._base", "LinearRegression")
#: one hostile use of every opcode that imports, creates, calls or mutates something
#: (pickle would run code chosen by the file through each of them)
OPCODE_ABUSE = {
    "GLOBAL": b"\x80\x02" + g0("os", "system") + b"0}.",
    "STACK_GLOBAL": b"\x80\x04" + u("os") + u("system") + b"\x930}.",
    "REDUCE": b"\x80\x02" + _CALL + b"0}.",
    "INST": b"(S'x'\nios\nsystem\n0(dp0\n.",
    "OBJ": b"(" + g0("os", "system") + b"S'x'\no0}.",
    "NEWOBJ": b"\x80\x02" + g0("subprocess", "Popen") + b")\x810}.",
    "NEWOBJ_EX": b"\x80\x04" + g0("subprocess", "Popen") + b")}\x920}.",
    "BUILD": b"\x80\x02" + _LR + b")\x81}" + u("x") + _CALL + b"sb0}.",
    "SETITEM": b"\x80\x02" + _LR + b")\x81" + u("k") + u("v") + b"s.",
    "SETITEMS": b"\x80\x02" + _LR + b")\x81(" + u("k") + u("v") + b"u.",
    "APPEND": b"\x80\x02" + _LR + b")\x81K\x01a.",
    "APPENDS": b"\x80\x02" + _LR + b")\x81(K\x01e.",
    "ADDITEMS": b"\x80\x04" + _LR + b")\x81(K\x01\x90.",
    "EXT1": b"\x80\x02\x82\x01.",
    "EXT2": b"\x80\x02\x83\x01\x00.",
    "EXT4": b"\x80\x02\x84\x01\x00\x00\x00.",
    "PERSID": b"(Pfoo\n0(dp0\n.",
    "BINPERSID": b"\x80\x02" + u("foo") + b"Q0}.",
    "NEXT_BUFFER": b"\x80\x05\x970}.",
    "READONLY_BUFFER": b"\x80\x05" + _CALL + b"\x980}.",
    "DUP": b"\x80\x02" + _CALL + b"20}.",
    "MEMOIZE": b"\x80\x04" + _CALL + b"\x940}.",
    "PUT": b"(" + g0("os", "system") + b"(S'x'\ntRp0\n0(dp1\n.",
}


def test_every_calling_opcode_has_an_abuse_case() -> None:
    calling = {
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD",
        "SETITEM", "SETITEMS", "APPEND", "APPENDS", "ADDITEMS", "EXT1", "EXT2", "EXT4",
        "PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER",
    }  # fmt: skip
    assert calling <= set(OPCODE_ABUSE)
    for name in OPCODE_ABUSE:
        assert name in {op.name for op in pickletools.opcodes}


@pytest.mark.parametrize("name", sorted(OPCODE_ABUSE))
def test_opcode_abuse_is_refused(tmp: Path, name: str) -> None:
    data = OPCODE_ABUSE[name]
    assert name in [op.name for op, _, _ in pickletools.genops(data)]
    src = tmp / "x.pkl"
    src.write_bytes(data)
    [res] = sp.scan([src])
    assert res.verdict != "safe", res
    with pytest.raises(sp.SafepointError):
        sp.convert(src, tmp / "x.sp")
    assert not (tmp / "x.sp").exists()


def test_many_concatenated_streams_are_all_audited(tmp: Path) -> None:
    """Every stream is audited (the last one's name is reported), the report stays short."""
    streams = [b"\x80\x02" + g0(f"mod{i}", "f") + b"0}." for i in range(300)]
    streams.append(b"\x80\x02" + g0("os", "system") + b")R.")
    src = tmp / "many.pkl"
    src.write_bytes(b"".join(streams))
    [res] = sp.scan([src])
    assert res.verdict == "refused"
    assert "os.system" in res.untrusted and "mod299.f" in res.untrusted
    assert res.checked["pickle_streams"] == 301
    assert len(res.problems) <= 51
    assert "301 pickle streams" in res.problems[0]
