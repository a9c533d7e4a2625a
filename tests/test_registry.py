"""The generic registry: lookups, "did you mean", lazy targets, user TOML entries, entry points."""

from __future__ import annotations

import sys

import pytest

from rpo_bench.core.errors import BadInputError, UnknownNameError
from rpo_bench.core.registry import Registry


def test_unknown_name_suggests_closest_matches():
    registry = Registry("things")
    for name in ("sd15-base", "sd15-dpo", "sdxl-base"):
        registry.register(name, object())
    with pytest.raises(UnknownNameError) as info:
        registry.get("sd15-bse")
    assert "sd15-base" in str(info.value) and "did you mean" in str(info.value)
    assert "\n" not in str(info.value)


def test_aliases_and_lazy_targets_resolve_on_first_use():
    registry = Registry("things")
    registry.register("join", "os.path:join", aliases=("pathjoin",))
    assert registry.get("pathjoin") is registry.get("join")
    import os.path

    assert registry.get("join") is os.path.join


def test_lazy_target_that_does_not_import_is_a_clear_error():
    registry = Registry("things")
    registry.register("broken", "no_such_module_xyz:thing")
    with pytest.raises(BadInputError, match="no_such_module_xyz:thing"):
        registry.get("broken")


def test_duplicate_registration_is_refused():
    registry = Registry("things")
    registry.register("a", 1)
    with pytest.raises(ValueError):
        registry.register("a", 2)


def test_user_toml_adds_and_overrides_entries(rpo_home):
    (rpo_home / "registry.toml").write_text('[things.mine]\nvalue = 3\nsummary = "mine"\n'
                                            '[things.builtin]\nvalue = 7\n', encoding="utf-8")
    registry = Registry("things", from_table=lambda name, table: table["value"])
    registry.register("builtin", 1)
    assert registry.get("mine") == 3
    assert registry.get("builtin") == 7  # a user entry overrides the built-in of the same name
    assert registry.entry("mine").source.startswith("user")
    (rpo_home / "registry.toml").unlink()


def test_invalid_user_toml_names_the_file(rpo_home):
    (rpo_home / "registry.toml").write_text("[things.x\n", encoding="utf-8")
    registry = Registry("things", from_table=lambda name, table: table)
    with pytest.raises(BadInputError, match="registry.toml"):
        registry.names()
    (rpo_home / "registry.toml").unlink()


def test_entry_points_register_plugins(tmp_path, monkeypatch):
    dist = tmp_path / "rpo_bench_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rpo-bench-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rpo_bench.things]\nplugged = os.path:basename\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("things")
    import os.path

    assert registry.get("plugged") is os.path.basename
    assert "entry point" in registry.entry("plugged").source
    assert str(tmp_path) in sys.path


# -- E9: registry.toml read through the one reader of user files -------------------------------------------------------
def test_registry_toml_not_utf8_names_file_and_byte_offset(rpo_home):
    (rpo_home / "registry.toml").write_bytes('[things.caf\xe9]\nvalue = 1\n'.encode("latin-1"))
    registry = Registry("things", from_table=lambda name, table: table)
    try:
        with pytest.raises(BadInputError) as caught:
            registry.names()
    finally:
        (rpo_home / "registry.toml").unlink()
    assert str(caught.value) == (f"registry file {rpo_home / 'registry.toml'} is not UTF-8 text: byte 0xe9 at offset "
                                 "11 (line 1); accepted: UTF-8 text (save the file as UTF-8)")


def test_registry_toml_that_is_a_folder_is_refused_not_skipped(rpo_home):
    (rpo_home / "registry.toml").mkdir()
    registry = Registry("things", from_table=lambda name, table: table)
    try:
        with pytest.raises(BadInputError, match="registry.toml is a folder; accepted: a regular file"):
            registry.names()
    finally:
        (rpo_home / "registry.toml").rmdir()


@pytest.mark.parametrize("text, fragment", [
    ("[things.mine]\nvalue = \"3\"\n", "registry.toml: [things.mine] value = '3': accepted: an integer"),
    ("[things.mine]\nvalu = 3\n", "registry.toml: things 'mine': unknown key(s) valu; accepted: value"),
    ("things = 3\n", "registry.toml: things = 3: accepted: tables [things.NAME]"),
    ("[things.mine\n", "registry.toml is not valid TOML: Expected ']'"),
])
def test_registry_toml_wrong_value_types_name_file_and_key(rpo_home, text, fragment):
    from rpo_bench.core.registry import INTEGER, check_table_keys, check_table_values

    def from_table(name, table):
        check_table_keys("things", name, table, {"value"})
        check_table_values("things", name, table, {"value": INTEGER})
        return table["value"]

    (rpo_home / "registry.toml").write_text(text, encoding="utf-8")
    registry = Registry("things", from_table=from_table)
    try:
        with pytest.raises(BadInputError) as caught:
            registry.names()
    finally:
        (rpo_home / "registry.toml").unlink()
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
