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


# ---------------------------------------------------------------- settings: types, hosts, precedence

@pytest.mark.parametrize("body,reason", [
    ({"fal_max_cost_usd": "0.5"}, "fal_max_cost_usd: expected a number of US dollars, got str"),
    ({"fal_max_cost_usd": True}, "fal_max_cost_usd: expected a number of US dollars, got bool"),
    ({"fal_max_cost_usd": -1}, "fal_max_cost_usd: got -1; allowed 0 (no limit) to 1000"),
    ({"default_backend": "false"}, "default_backend: got 'false'; allowed: preview, fal, local"),
    ({"fal_queue_url": 5}, "fal_queue_url: expected a string (an http(s) URL or empty), got int"),
    ({"fal_rest_url": "ftp://x"}, "fal_rest_url: must be an http(s) URL or empty, got 'ftp://x'"),
    ({"allow_private_hosts": "false"}, "allow_private_hosts: unknown setting; known: fal_queue_url, fal_rest_url, "
                                       "fal_cdn_url, fal_max_cost_usd, default_backend"),
    (["fal_queue_url"], "the body must be a JSON object of settings"),
])
def test_settings_update_checks_every_type_and_names_the_field(cfg, body, reason):
    with pytest.raises(ValueError) as e:
        settings.Settings().updated(body)
    assert str(e.value).startswith(reason), str(e.value)


def test_hand_edited_settings_file_falls_back_per_field_never_bool_of_a_string(cfg, caplog):
    import json

    os.makedirs(cfg, exist_ok=True)
    with open(cfg / "settings.json", "w") as f:
        json.dump({"fal_max_cost_usd": "false", "default_backend": "fal", "fal_cdn_url": ["x"]}, f)
    s = settings.Settings.load()
    assert s.fal_max_cost_usd == 0.0 and s.default_backend == "fal" and s.fal_cdn_url == ""
    assert "ignoring fal_max_cost_usd" in caplog.text and "ignoring fal_cdn_url" in caplog.text


def test_key_goes_only_to_fal_hosts_unless_the_environment_allows(monkeypatch):
    from ltx_outpaint.fal.hosts import FalHosts, check_settings_hosts, is_fal_url

    for url in ("https://queue.fal.run", "https://rest.fal.ai/x", "https://v3.fal.media", "https://fal.run"):
        assert is_fal_url(url), url
    for url in ("http://queue.fal.run", "https://fal.run.evil.com", "https://evilfal.run", "https://x@evil.com",
                "https://queue.fal.run@evil.com/", "https://evil.com/queue.fal.run"):
        assert not is_fal_url(url), url
    monkeypatch.delenv("LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS", raising=False)
    with pytest.raises(ValueError) as e:
        check_settings_hosts({"fal_queue_url": "https://attacker.example:8443/q?t=1"})
    assert str(e.value).startswith("fal_queue_url: attacker.example:8443 is not one of fal's hosts") and "t=1" \
        not in str(e.value) and "LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS=1" in str(e.value)
    check_settings_hosts({"fal_queue_url": "https://queue.fal.run", "fal_cdn_url": ""})
    env = {"LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS": "127.0.0.1, proxy.lan:8080"}
    check_settings_hosts({"fal_queue_url": "http://127.0.0.1:5000/q", "fal_rest_url": "http://proxy.lan:8080"}, env)
    with pytest.raises(ValueError):
        check_settings_hosts({"fal_rest_url": "http://proxy.lan:9999"}, env)
    check_settings_hosts({"fal_rest_url": "http://anything.example"}, {"LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS": "1"})
    # the client itself refuses to send the key to a status URL elsewhere (e.g. from a tampered journal)
    hosts = FalHosts("http://127.0.0.1:5000/queue", "http://127.0.0.1:5000/rest", "http://127.0.0.1:5000/cdn")
    assert hosts.may_receive_key("http://127.0.0.1:5000/queue/a/b/requests/x/status")
    assert hosts.may_receive_key("https://queue.fal.run/a/b/requests/x")
    assert not hosts.may_receive_key("http://127.0.0.1:5001/queue/a/b/requests/x")
    assert not hosts.may_receive_key("https://evil.example/queue")


def test_base_url_precedence_explicit_then_env_then_settings_then_default(cfg, monkeypatch):
    """The one documented order: explicit (code / CLI) > environment > settings.json > fal's default."""
    from ltx_outpaint.errors import InputError
    from ltx_outpaint.fal.backend import FalBackend, FalConfig

    for var in ("LTX_OUTPAINT_FAL_QUEUE_URL", "LTX_OUTPAINT_FAL_REST_URL", "LTX_OUTPAINT_FAL_CDN_URL",
                "LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS"):
        monkeypatch.delenv(var, raising=False)
    assert FalBackend(FalConfig()).hosts().queue == "https://queue.fal.run"
    settings.Settings(fal_queue_url="https://eu.queue.fal.run", fal_rest_url="http://127.0.0.1:7/rest").save()
    with pytest.raises(InputError) as e:  # a settings file naming a non-fal host needs the env opt-in
        FalBackend(FalConfig()).hosts()
    assert str(e.value).startswith("fal_rest_url (LTX Outpaint settings): 127.0.0.1:7 is not one of fal's hosts")
    monkeypatch.setenv("LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS", "127.0.0.1")
    h = FalBackend(FalConfig()).hosts()
    assert (h.queue, h.rest, h.cdn) == ("https://eu.queue.fal.run", "http://127.0.0.1:7/rest", "https://v3.fal.media")
    monkeypatch.setenv("LTX_OUTPAINT_FAL_QUEUE_URL", "http://127.0.0.1:8/queue")  # env beats the settings file
    assert FalBackend(FalConfig()).hosts().queue == "http://127.0.0.1:8/queue"
    assert FalBackend(FalConfig(queue_url="http://127.0.0.1:9/q")).hosts().queue == "http://127.0.0.1:9/q"
    monkeypatch.delenv("LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS")  # env URLs need no opt-in; settings ones do
    monkeypatch.setenv("LTX_OUTPAINT_FAL_REST_URL", "http://10.0.0.2/rest")
    h = FalBackend(FalConfig()).hosts()
    assert (h.queue, h.rest) == ("http://127.0.0.1:8/queue", "http://10.0.0.2/rest")
