"""The `stockgate` command: parsing, usage errors and exit codes that need no server.
The end-to-end runs against a real server are in test_cli_server.py."""

from __future__ import annotations

import io

import pytest

from stockgate.server import cli


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_help_documents_every_command_and_the_exit_codes(capsys):
    assert run("--help")[0] == 0
    text = capsys.readouterr().out
    for command in ("serve", "import", "stock", "availability", "reserve", "commit",
                    "release", "watch", "campaign", "check"):
        assert command in text
    for code in range(6):
        assert f"\n  {code}  " in text
    assert "STOCKGATE_ADDRESS" in text and "STOCKGATE_TOKEN" in text


@pytest.mark.parametrize("text, line", [
    ("SKU-1001:2", ("SKU-1001", 2)),
    ("a:b:3", ("a:b", 3)),
])
def test_lines_are_sku_colon_qty(text, line):
    assert cli._line(text) == line


@pytest.mark.parametrize("argv", [
    ["reserve", "--channel", "tmall", "SKU-1001"],  # no quantity
    ["reserve", "--channel", "tmall", "SKU-1001:-1"],
    ["reserve", "SKU-1001:1"],  # no channel
    ["reserve", "--channel", "tmall", "--ttl", "soon", "SKU-1001:1"],
    ["campaign", "fly", "x"],
    ["stock"],
    [],
])
def test_a_bad_command_line_exits_2_with_the_usage(argv, capsys):
    assert run(*argv)[0] == cli.EXIT_USAGE
    assert "usage: stockgate" in capsys.readouterr().err


def test_a_bad_time_is_a_usage_error_naming_the_forms_accepted():
    code, _, err = run("campaign", "create", "c1", "--channel", "tmall", "--location", "WH",
                       "--source-pool", "online", "--quota", "SKU-1:5", "--start", "tomorrow")
    assert code == cli.EXIT_USAGE
    assert "'tomorrow' is not a time" in err and "ISO 8601" in err


def test_end_and_duration_exclude_each_other():
    code, _, err = run("campaign", "create", "c1", "--channel", "tmall", "--location", "WH",
                       "--source-pool", "online", "--quota", "SKU-1:5", "--end", "+1h",
                       "--duration", "2h")
    assert code == cli.EXIT_USAGE and "not both" in err


def test_times_and_durations():
    now = 1_800_000_000_000
    assert cli._when_ms("now", now) == now
    assert cli._when_ms("+30m", now) == now + 30 * 60_000
    assert cli._when_ms("1800000000123", now) == 1_800_000_000_123
    assert cli._when_ms("1970-01-01T00:00:01+00:00", now) == 1_000
    assert cli._duration_ms("90s") == 90_000 and cli._duration_ms("1d") == 86_400_000


def test_mtls_needs_both_cert_and_key():
    code, _, err = run("stock", "SKU-1", "--cert", "-----BEGIN CERTIFICATE-----\nx\n")
    assert code == cli.EXIT_USAGE and "client_key" in err


def test_a_missing_csv_is_named():
    code, _, err = run("import", "/nonexistent/stock.csv")
    assert code == cli.EXIT_USAGE and "/nonexistent/stock.csv: no such file" in err


def test_an_unreachable_server_exits_3_with_the_address_and_the_fix():
    code, _, err = run("--address", "127.0.0.1:9", "--timeout", "0.3", "stock", "SKU-1")
    assert code == cli.EXIT_UNAVAILABLE
    assert "127.0.0.1:9" in err and "fix:" in err


def test_errors_in_json_mode_are_json_on_stderr():
    import json

    code, out, err = run("--json", "--address", "127.0.0.1:9", "--timeout", "0.3",
                         "release", "r-1")
    assert code == cli.EXIT_UNAVAILABLE and out == ""
    body = json.loads(err)
    assert body["error"] == "unavailable" and "fix" in body
