import pytest

from flywheel.settings import SettingsError, load_settings


def test_demo_profile_is_the_default(monkeypatch):
    monkeypatch.delenv("COSMICMAN_PROFILE", raising=False)
    monkeypatch.delenv("COSMICMAN_WORKSPACE", raising=False)
    s = load_settings()
    assert s.profile == "demo"
    assert s.workspace.is_absolute() and s.workspace.name == "workspace"
    assert s.store_url == str(s.workspace / "store")
    assert s.synthetic.count == 2000


def test_environment_overrides_the_profile_file(monkeypatch, tmp_path):
    monkeypatch.setenv("COSMICMAN_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("COSMICMAN_SYNTHETIC__COUNT", "7")
    s = load_settings("test")
    assert s.workspace == tmp_path
    assert s.synthetic.count == 7
    assert s.synthetic.width == 128  # the rest of the nested block still comes from the file


def test_bad_profile_and_bad_values_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("COSMICMAN_CONFIG_DIR", str(tmp_path))
    (tmp_path / "broken.yaml").write_text("synthetic:\n  count: -3\n  defect_weights: {sunburn: 1}\n")
    with pytest.raises(SettingsError) as err:
        load_settings("broken")
    assert str(tmp_path / "broken.yaml") in str(err.value)
    assert "synthetic.count" in str(err.value)
    with pytest.raises(SettingsError, match="no such profile 'nope'.*known: broken"):
        load_settings("nope")
