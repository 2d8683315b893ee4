"""The code package (runtime/codepack.py): what is packaged, that it is deterministic and
content-addressed, and that a step fetches, verifies and unpacks it safely."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dagsmith.runtime import codepack
from dagsmith.runtime.context import StepFailed


def write(folder: Path, files: dict) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return folder


def test_packages_the_python_files_by_the_documented_rules(tmp_path):
    write(tmp_path, {
        "steps.py": "def main():\n    return 1\n", "pkg/__init__.py": "", "pkg/features.py": "X = 'é'\n",
        "pipeline.yaml": "dagsmith: 1\n", "notes.txt": "no", ".hidden.py": "no",
        ".venv/lib/x.py": "no", ".dagsmith/runs/x.py": "no", ".git/hooks/x.py": "no", "pkg/__pycache__/x.py": "no",
        "node_modules/x.py": "no", "build/airflow/dag.py": "no", "dist/x.py": "no", "env/pyvenv.cfg": "", "env/lib/y.py": "no",
        "out/dag.py": "no",
    })
    package = codepack.build(tmp_path, exclude=(tmp_path / "out",))
    assert package.files == ("pkg/__init__.py", "pkg/features.py", "steps.py")
    document = json.loads(package.text)
    assert document == {"format": "dagsmith-code/1", "files": {"pkg/__init__.py": "", "pkg/features.py": "X = 'é'\n",
                                                                 "steps.py": "def main():\n    return 1\n"}}
    assert package.key == f"code/{hashlib.sha256(package.text.encode()).hexdigest()}.json"
    assert package.has_module("pkg") and package.has_module("steps") and not package.has_module("step")


def test_the_same_sources_give_the_same_bytes_and_name(tmp_path):
    one = write(tmp_path / "one", {"b.py": "B = 2\n", "a/x.py": "A = 1\n"})
    two = write(tmp_path / "two", {"a/x.py": "A = 1\n", "b.py": "B = 2\n"})
    assert codepack.build(one).text == codepack.build(two).text
    (two / "b.py").write_text("B = 3\n")
    assert codepack.build(one).key != codepack.build(two).key


def test_refuses_what_it_cannot_package_with_a_clear_error(tmp_path, monkeypatch):
    write(tmp_path / "latin", {"m.py": b"X = '\xe9'\n"})
    with pytest.raises(codepack.CodePackageError, match=r"m.py is not UTF-8"):
        codepack.build(tmp_path / "latin")
    outside = write(tmp_path / "elsewhere", {"secret.py": "X = 1\n"})
    folder = write(tmp_path / "linked", {"ok.py": ""})
    (folder / "secret.py").symlink_to(outside / "secret.py")
    with pytest.raises(codepack.CodePackageError, match=r"secret.py: a symlink .* outside the spec folder"):
        codepack.build(folder)
    (folder / "secret.py").unlink()
    (folder / "inside.py").symlink_to(folder / "ok.py")  # a link inside the folder: its text, under its name
    (folder / "lib").symlink_to(outside, target_is_directory=True)  # a linked folder is not followed
    assert codepack.build(folder).files == ("inside.py", "ok.py")
    monkeypatch.setattr(codepack, "MAX_FILES", 2)
    write(tmp_path / "many", {"a.py": "", "b.py": "", "c.py": ""})
    with pytest.raises(codepack.CodePackageError, match="more than 2 Python files"):
        codepack.build(tmp_path / "many")
    monkeypatch.setattr(codepack, "MAX_BYTES", 100)
    write(tmp_path / "big", {"a.py": "x" * 200})
    with pytest.raises(codepack.CodePackageError, match="over 0 MB"):
        codepack.build(tmp_path / "big")


def test_top_module_and_in_folder(tmp_path):
    write(tmp_path, {"steps.py": "", "pkg/mod.py": ""})
    assert codepack.top_module("pkg.mod:main") == "pkg" and codepack.top_module("sklearn.linear_model.Ridge") == "sklearn"
    assert codepack.top_module("not a reference") is None
    assert codepack.in_folder("steps", tmp_path) and codepack.in_folder("pkg", tmp_path) and not codepack.in_folder("sklearn", tmp_path)
    write(tmp_path, {"build/__init__.py": "", "venv/pyvenv.cfg": "", "venv/__init__.py": ""})
    assert not codepack.in_folder("build", tmp_path) and not codepack.in_folder("venv", tmp_path)  # left out of the package


@pytest.fixture
def package_file(tmp_path, monkeypatch):
    monkeypatch.setenv(codepack.CACHE_ENV, str(tmp_path / "cache"))
    package = codepack.build(write(tmp_path / "spec", {"shipped_mod_x.py": "VALUE = 42\n", "shipped_pkg_x/__init__.py": "A = 1\n"}))
    path = tmp_path / "store" / package.key
    path.parent.mkdir(parents=True)
    path.write_text(package.text, encoding="utf-8")
    return path


def test_activate_unpacks_once_and_puts_the_package_first_on_sys_path(package_file, monkeypatch):
    monkeypatch.setattr(codepack, "_active", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = codepack.activate(str(package_file))
    assert sys.path[0] == str(folder) and folder.name == package_file.stem
    assert (folder / "shipped_mod_x.py").read_text() == "VALUE = 42\n"
    from dagsmith.runtime.userscode import code_fingerprint

    assert code_fingerprint("shipped_mod_x:VALUE", Path(".")) == hashlib.sha256(b"VALUE = 42\n").hexdigest()
    package_file.unlink()  # unpacked already: the next step on this machine does not fetch it
    monkeypatch.setattr(codepack, "_active", {})
    assert codepack.activate(str(package_file)) == folder


def test_a_tampered_or_misnamed_package_is_a_clean_step_failure(package_file, monkeypatch):
    monkeypatch.setattr(codepack, "_active", {})
    text = package_file.read_text()
    package_file.write_text(text.replace("42", "43"))
    with pytest.raises(StepFailed, match=f"the code package {package_file} does not match its name"):
        codepack.activate(str(package_file))
    with pytest.raises(StepFailed, match="is not a code package"):
        codepack.activate(str(package_file.with_name("x.json")))
    with pytest.raises(StepFailed, match="is not a code package"):
        codepack.activate(str(package_file) + "\n")
    with pytest.raises(StepFailed, match=r"cannot read the code package .*/code/0{64}\.json: No such file"):
        codepack.activate(str(package_file.with_name("0" * 64 + ".json")))


@pytest.mark.parametrize("path", ["../evil.py", "/etc/evil.py", "a/../../evil.py", "evil.sh", "a//b.py"])
def test_a_package_with_a_path_leaving_its_folder_is_refused(tmp_path, monkeypatch, path):
    monkeypatch.setenv(codepack.CACHE_ENV, str(tmp_path / "cache"))
    data = json.dumps({"format": codepack.FORMAT, "files": {path: "X = 1\n"}}).encode()
    uri = str(tmp_path / f"{hashlib.sha256(data).hexdigest()}.json")
    with pytest.raises(StepFailed, match="not a relative path of a .py file"):
        codepack.unpack(uri, data)
    assert not (tmp_path / "evil.py").exists()


def test_concurrent_steps_unpack_one_complete_folder(package_file):
    data = package_file.read_bytes()
    results, errors = [], []

    def one():
        try:
            results.append(codepack.unpack(str(package_file), data))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    root = results[0].parent
    assert sorted(p.name for p in root.iterdir()) == [package_file.stem]  # no staging folder left behind


def test_a_cache_folder_another_user_could_write_is_refused(tmp_path, monkeypatch):
    world_writable = tmp_path / "world_writable"
    world_writable.mkdir(mode=0o777)
    os.chmod(world_writable, 0o777)
    monkeypatch.setenv(codepack.CACHE_ENV, str(world_writable))
    with pytest.raises(StepFailed, match="not a folder of this user's alone"):
        codepack.cache_root()


def test_dagsmith_step_imports_a_custom_step_from_the_package_outside_the_spec_folder(tmp_path, package_file):
    """`dagsmith step` with DAGSMITH_CODE in an empty working folder: the step's module comes from
    the package; without DAGSMITH_CODE it is not found."""
    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    spec_dir = write(tmp_path / "spec2", {
        "pipeline.yaml": "dagsmith: 1\npipeline: {name: shipped}\nsteps:\n  hello: {run: {python: 'shipped_hello:main'}}\n",
        "shipped_hello.py": "def main():\n    return 'from the package'\n",
    })
    ir = compile_spec(load_spec(str(spec_dir / "pipeline.yaml")))
    ir_file = tmp_path / "p.ir.json"
    ir_file.write_text(ir.dumps())
    package = codepack.build(spec_dir)
    code = tmp_path / "store2" / package.key
    code.parent.mkdir(parents=True)
    code.write_text(package.text)
    empty = tmp_path / "pod"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSMITH_")}
    env[codepack.CACHE_ENV] = str(tmp_path / "cache2")
    argv = [str(Path(sys.executable).parent / "dagsmith"), "step", str(ir_file), "hello", "--store", str(tmp_path / "runs")]
    ran = subprocess.run(argv, cwd=empty, env={**env, "DAGSMITH_CODE": str(code)}, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["returned"] == "from the package"
    without = subprocess.run(argv, cwd=empty, env=env, capture_output=True, text=True)
    assert without.returncode == 1 and "cannot import 'shipped_hello'" in without.stderr and "Traceback" not in without.stderr
    broken = subprocess.run(argv, cwd=empty, env={**env, "DAGSMITH_CODE": str(code.with_name("0" * 64 + ".json"))},
                            capture_output=True, text=True)
    assert broken.returncode == 1 and "cannot read the code package" in broken.stderr and "Traceback" not in broken.stderr


def test_the_deployed_package_wins_over_a_stale_copy_in_the_working_folder(package_file, tmp_path, monkeypatch):
    from dagsmith.runtime.userscode import code_fingerprint

    monkeypatch.setattr(codepack, "_active", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    stale = write(tmp_path / "image-folder", {"shipped_mod_x.py": "VALUE = 1\n"})
    monkeypatch.setenv("DAGSMITH_CODE", str(package_file))
    assert code_fingerprint("shipped_mod_x:VALUE", stale) == hashlib.sha256(b"VALUE = 42\n").hexdigest()
    monkeypatch.delenv("DAGSMITH_CODE")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith(os.environ[codepack.CACHE_ENV])])
    assert code_fingerprint("shipped_mod_x:VALUE", stale) == hashlib.sha256(b"VALUE = 1\n").hexdigest()


def test_a_package_over_the_limit_is_not_read_whole(package_file, monkeypatch):
    monkeypatch.setattr(codepack, "MAX_BYTES", 10)
    with pytest.raises(StepFailed, match=f"the code package {package_file} is over"):
        codepack.fetch(str(package_file))
