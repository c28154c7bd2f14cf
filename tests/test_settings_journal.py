import os
import stat

import pytest

from ltx_outpaint import settings
from ltx_outpaint.fal.journal import Journal, JournalEntry


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("LTX_OUTPAINT_CONFIG_DIR", str(tmp_path / "cfg"))
    for var in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cfg"


def test_key_sources_in_order(cfg, monkeypatch):
    assert settings.find_fal_key() is None
    path = settings.store_fal_key("stored-id:stored-secret-123456")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings.find_fal_key().value == "stored-id:stored-secret-123456"
    monkeypatch.setenv("FAL_KEY_ID", "kid")
    monkeypatch.setenv("FAL_KEY_SECRET", "ksecret")
    k = settings.find_fal_key()
    assert k.value == "kid:ksecret" and "FAL_KEY_ID" in k.source
    monkeypatch.setenv("FAL_KEY", "env-key-abcdef-123456")
    k = settings.find_fal_key()
    assert k.value == "env-key-abcdef-123456" and k.source == "env FAL_KEY"
    assert "env-key" not in repr(k) and "env-key" not in str(k) and "env-key" not in f"{k}"
    assert k.masked() == "...3456"
    settings.store_fal_key("")
    assert not os.path.exists(path)


def test_settings_roundtrip(cfg):
    assert settings.Settings.load() == settings.Settings()
    settings.Settings(fal_queue_url="http://127.0.0.1:1/q", fal_max_cost_usd=0.5).save()
    s = settings.Settings.load()
    assert s.fal_queue_url == "http://127.0.0.1:1/q" and s.fal_max_cost_usd == 0.5


def test_journal_records_and_lists_pending(cfg):
    j = Journal()
    e = j.record(JournalEntry("req-1", "fal-ai/x", "s", "r", "c", request={"prompt": "p"}, cost_estimate_usd=0.1))
    j.record(JournalEntry("req-2", "fal-ai/x", "s", "r", "c"))
    assert [x.request_id for x in j.pending()] == ["req-1", "req-2"]
    j.update("req-1", state="saved", result_path="/out/a.mp4")
    assert [x.request_id for x in Journal().pending()] == ["req-2"]
    assert Journal().get("req-1").result_path == "/out/a.mp4" and e.request == {"prompt": "p"}
    with pytest.raises(ValueError):
        j.get("../../etc/passwd")
