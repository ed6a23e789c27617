"""Settings: flags > STOCKGATE_* environment > TOML file > defaults, each checked against
its limit, and every one documented in the README's configuration table."""

from __future__ import annotations

import pathlib

import pytest

from stockgate.server import Config, ConfigError, TokenGrant
from stockgate.server.config import SETTINGS, load

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET = "s" * 16


def _toml(tmp_path, text: str) -> str:
    p = tmp_path / "stockgate.toml"
    p.write_text(text)
    return str(p)


def test_defaults():
    c = load([], environ={})
    assert c == Config()
    assert (c.data_dir, c.listen, c.durability, c.metrics_port) == (
        "./stockgate-data", "127.0.0.1:50051", "fsync", 0)
    assert not c.auth and not c.tls and not c.demo


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    path = _toml(tmp_path, """
listen = "127.0.0.1:7000"
durability = "async"
watch_coalesce_ms = 50
inflight_ops_max = 1_000
""")
    env = {"STOCKGATE_LISTEN": "127.0.0.1:8000", "STOCKGATE_WATCH_COALESCE_MS": "20",
           "STOCKGATE_DEMO": "true"}
    c = load(["--config", path, "--listen", "127.0.0.1:9000"], environ=env)
    assert c.listen == "127.0.0.1:9000"  # flag
    assert c.watch_coalesce_ms == 20  # environment over the file
    assert c.durability == "async" and c.inflight_ops_max == 1_000  # file
    assert c.demo  # environment
    assert c.message_bytes_max == Config().message_bytes_max  # default
    assert not load(["--config", path, "--no-demo"], environ=env).demo


def test_config_file_from_the_environment(tmp_path):
    path = _toml(tmp_path, 'data_dir = "/srv/stock"\n')
    assert load([], environ={"STOCKGATE_CONFIG": path}).data_dir == "/srv/stock"


def test_tokens_from_the_file_and_the_environment(tmp_path):
    path = _toml(tmp_path, f"""
[tokens.ops]
secret = "{SECRET}"
admin = true

[tokens.tmall]
secret_env = "TMALL_TOKEN"
channels = ["tmall", "tmall-global"]
""")
    c = load(["--config", path], environ={"TMALL_TOKEN": "t" * 20,
                                          "STOCKGATE_ADMIN_TOKEN": "a" * 20})
    assert c.tokens == {
        "ops": TokenGrant(secret=SECRET, admin=True),
        "tmall": TokenGrant(secret="t" * 20, channels=("tmall", "tmall-global")),
        "admin": TokenGrant(secret="a" * 20, admin=True)}
    assert c.auth
    assert SECRET not in repr(c)  # secrets stay out of logs and tracebacks


@pytest.mark.parametrize("argv, env, toml, message", [
    (["--inflight-ops-max", "0"], {}, "", "inflight_ops_max is 0; it must be between 1 and"),
    (["--watch-coalesce-ms", "1001"], {}, "", "between 1 and 1000"),
    (["--message-bytes-max", "lots"], {}, "", "--message-bytes-max is 'lots'; it must be an"),
    ([], {"STOCKGATE_METRICS_PORT": "70000"}, "", "metrics_port is 70000"),
    ([], {"STOCKGATE_DEMO": "maybe"}, "", "STOCKGATE_DEMO is 'maybe'; use true or false"),
    (["--listen", "nowhere"], {}, "", "listen is 'nowhere'; use host:port"),
    ([], {}, "colour = 'blue'\n", "unknown setting 'colour'"),
    ([], {}, "durability = 'sometimes'\n", "durability is 'sometimes'; use one of fsync"),
    ([], {}, "map_size_bytes = 4_194_304\nmap_size_bytes_max = 2_097_152\n",
     "map_size_bytes_max (2097152) must be at least map_size_bytes"),
    (["--tls-cert", "c.pem"], {}, "", "tls_cert and tls_key go together"),
    (["--tls-client-ca", "ca.pem"], {}, "", "tls_client_ca (mTLS) needs tls_cert"),
    ([], {}, "[tokens.x]\nsecret = 'short'\nadmin = true\n", "tokens.x.secret is 5 bytes"),
    ([], {}, f"[tokens.x]\nsecret = '{SECRET}'\n", "either admin = true or name channels"),
    ([], {}, f"[tokens.x]\nsecret = '{SECRET}'\nadmin = true\nchannels = ['a']\n",
     "either admin = true or name channels"),
    ([], {}, "[tokens.x]\nsecret_env = 'NOPE'\nadmin = true\n", "names 'NOPE', which is not"),
    ([], {}, f"[tokens.x]\nsecret = '{SECRET}'\nadmin = true\n[tokens.y]\n"
             f"secret = '{SECRET}'\nadmin = true\n", "tokens.y.secret is the same as tokens.x"),
    ([], {}, "this is not toml", "not valid TOML"),
    ([], {}, "[tokens.x]\nsecret = 'très-secret-mot-de-passe'\nadmin = true\n",
     "tokens.x.secret must be ASCII: gRPC metadata carries ASCII only"),
    ([], {"STOCKGATE_ADMIN_TOKEN": "пароль-пароль-пароль"}, "",
     "tokens.admin.secret must be ASCII"),
    ([], {"STOCKGATE_MESSAGE_BYTES_MAX": "65536"}, "",
     "message_bytes_max is 65536; it must be between 1048576"),
])
def test_bad_settings_name_the_setting_and_the_fix(tmp_path, argv, env, toml, message):
    if toml:
        argv = [*argv, "--config", _toml(tmp_path, toml)]
    with pytest.raises(ConfigError) as e:
        load(argv, environ=env)
    assert message in str(e.value)


def test_a_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="--config /no/such.toml: cannot read it"):
        load(["--config", "/no/such.toml"], environ={})


def test_config_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="session_inflight_ops_max is 0"):
        Config(session_inflight_ops_max=0)
    with pytest.raises(ConfigError, match="tokens.a must be a TokenGrant"):
        Config(tokens={"a": "secret"})


def test_every_setting_is_in_the_readme_table():
    doc = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        row = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{s.flag}`")), None)
        assert row is not None, f"the README's configuration table has no row for {s.flag}"
        assert f"`{s.env}`" in row and f"`{s.name}`" in row
    assert "`--config`" in doc and "STOCKGATE_ADMIN_TOKEN" in doc
