"""Extra guest packages: their names checked, in debootstrap's include list, and one image per set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import image
from testbed.cli import main
from testbed.errors import UserError
from testbed.image import guest_packages, image_key, load_recipe, require_image, rootfs_dir


def test_packages_are_sorted_without_repeats_or_blanks() -> None:
    assert guest_packages([" gcc", "libnuma-dev", "", "gcc", "g++"]) == ("g++", "gcc", "libnuma-dev")


def test_the_setting_is_read_when_no_packages_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_GUEST_PACKAGES", "strace,gdb")
    assert guest_packages() == ("gdb", "strace")
    monkeypatch.setenv("LLAMAS_GUEST_PACKAGES", "")
    assert guest_packages() == ()
    monkeypatch.setenv("LLAMAS_GUEST_PACKAGES", "gdb,Strace")
    with pytest.raises(UserError, match=r"^LLAMAS_GUEST_PACKAGES: 'Strace' is not a Debian package name"):
        guest_packages()


@pytest.mark.parametrize("name", ["Gdb", "lib_numa", "x", "-gdb", "gdb:amd64", "gdb=13.1", "a b"])
def test_what_is_not_a_debian_package_name_is_refused(name: str) -> None:
    with pytest.raises(UserError, match=rf"^--packages: {name!r} is not a Debian package name"):
        guest_packages([name], "--packages")


def test_a_package_set_is_part_of_the_image_key() -> None:
    assert image_key(("gdb",)) != image_key()
    assert image_key(guest_packages(["strace", "gdb"])) == image_key(guest_packages(["gdb", "strace"]))


def test_the_recipes_own_root_file_system_keeps_its_key_and_a_set_gets_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path))
    plain = rootfs_dir(())
    assert plain == tmp_path / "rootfs" / image._hash_files([image.RECIPE_FILE])[:16]  # the cache built before sets
    assert rootfs_dir(("gdb",)).name.startswith(f"{plain.name}+")
    assert rootfs_dir(("gdb",)) != rootfs_dir(("strace",))


def test_debootstrap_includes_the_extra_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path))
    commands: list[list[str]] = []

    def fake_run(argv: list[str]) -> str:
        commands.append(argv)
        Path(argv[-2]).mkdir()  # what debootstrap makes
        return ""

    monkeypatch.setattr(image, "run", fake_run)
    recipe = load_recipe()
    rootfs = image._build_rootfs(recipe, ("gdb", "strace"), force=False, log=lambda line: None)
    assert rootfs == rootfs_dir(("gdb", "strace")) and rootfs.is_dir()
    (include,) = [arg for arg in commands[0] if arg.startswith("--include=")]
    assert include == "--include=" + ",".join([*recipe.packages, "gdb", "strace"])


def test_a_build_replaces_older_images_of_its_own_set_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))
    cache = tmp_path / "cache"
    for name, packages in (("new", ["gdb"]), ("old", ["gdb"]), ("plain", []), ("other", ["strace"])):
        (cache / "images" / name).mkdir(parents=True)
        (cache / "images" / name / "manifest.json").write_text(json.dumps({"extra_packages": packages}))
    for path in ("snapshots/old-1", "snapshots/plain-2", "snapshots/other-3", "rootfs/r1+aa", "rootfs/r0+aa",
                 "rootfs/r0", "rootfs/r0+bb"):
        (cache / path).mkdir(parents=True)
    image._prune("new", cache / "rootfs/r1+aa", ("gdb",))
    left = sorted(str(p.relative_to(cache)) for p in cache.glob("*/*"))
    assert left == ["images/new", "images/other", "images/plain", "rootfs/r0", "rootfs/r0+bb", "rootfs/r1+aa",
                    "snapshots/other-3", "snapshots/plain-2"]


def test_a_missing_image_of_a_set_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"run `llamas image build --packages gdb,strace`$"):
        require_image(("gdb", "strace"))


@pytest.mark.parametrize("command", [["image", "build"], ["image", "info"], ["up", "dram-cxl"]])
def test_the_cli_refuses_a_bad_name_in_one_line_with_exit_2(command: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--packages", "gdb,Bad_Name"]) == 2
    assert capsys.readouterr().err == ("llamas: --packages: 'Bad_Name' is not a Debian package name (lowercase "
                                       "letters, digits, '+', '-' and '.'; two or more, the first a letter or digit)\n")
