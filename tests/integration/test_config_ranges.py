"""Every minichat_* directive has a range, and `nginx -t` refuses a value
outside it with a message naming the directive, the value and the range.

Each case takes node a's configuration (own_nginx.py), adds one line (or
two) in the http block ahead of the stack's own settings, and runs
`nginx -t` on it; nothing is started.
"""

import pytest

from own_nginx import OwnNginx


BAD = [
    ("minichat_reconnect_interval 0", 'invalid "minichat_reconnect_interval" "0": must be between 10ms and 1m'),
    ("minichat_reconnect_interval 2m", 'invalid "minichat_reconnect_interval" "2m": must be between 10ms and 1m'),
    ("minichat_dedup_ttl 0", 'invalid "minichat_dedup_ttl" "0": must be between 1m and 30d'),
    ("minichat_dedup_ttl 31d", 'invalid "minichat_dedup_ttl" "31d": must be between 1m and 30d'),
    ("minichat_relay_timeout 0", 'invalid "minichat_relay_timeout" "0": must be between 10ms and 10m'),
    ("minichat_repair_after 1s", 'invalid "minichat_repair_after" "1s": must be between 2s and 1h, or 0 (off)'),
    ("minichat_repair_after 2h", 'invalid "minichat_repair_after" "2h": must be between 2s and 1h, or 0 (off)'),
    ("minichat_redis_timeout 11m", 'invalid "minichat_redis_timeout" "11m": must be between 10ms and 10m'),
    ("minichat_redis_connect_timeout 5ms",
     'invalid "minichat_redis_connect_timeout" "5ms": must be between 10ms and 10m'),
    ("minichat_handshake_timeout 0", 'invalid "minichat_handshake_timeout" "0": must be between 100ms and 10m'),
    ("minichat_session_ttl 2s", 'invalid "minichat_session_ttl" "2s": must be between 3s and 1d'),
    ("minichat_session_ttl 2d", 'invalid "minichat_session_ttl" "2d": must be between 3s and 1d'),
    ("minichat_typing_interval 5ms", 'invalid "minichat_typing_interval" "5ms": must be 0 (off) or between 10ms and 1h'),
    ("minichat_flush_window 101ms", 'invalid "minichat_flush_window" "101ms": must be 0 (off) or between 1ms and 100ms'),
    ("minichat_flush_window 20ms busy=0",
     'invalid "minichat_flush_window" "busy=0": busy must be given once, between 1 and 1000000 connections'),
    ("minichat_flush_window 20ms busy=8 busy=9",
     'invalid "minichat_flush_window" "busy=9": busy must be given once, between 1 and 1000000 connections'),
    ("minichat_flush_window 20ms rate=0",
     'invalid "minichat_flush_window" "rate=0": rate must be given once, between 1 and 16000 messages a second'),
    ("minichat_flush_window 20ms rate=16001",
     'invalid "minichat_flush_window" "rate=16001": rate must be given once, between 1 and 16000 messages a second'),
    ("minichat_flush_window 20ms fast",
     'invalid "minichat_flush_window" parameter "fast": expected busy=N or rate=N'),
    ("minichat_ping_interval 500ms", 'invalid "minichat_ping_interval" "500ms": must be 0 (off) or between 1s and 1h'),
    ("minichat_max_message_size 100", 'invalid "minichat_max_message_size" "100": must be between 128 and 1m'),
    ("minichat_max_message_size 2m", 'invalid "minichat_max_message_size" "2m": must be between 128 and 1m'),
    ("minichat_send_queue_size 100", 'invalid "minichat_send_queue_size" "100": must be between 256 and 1g'),
    ("minichat_recent_log_size 0", "value must be between 1 and 1000000"),
    ("minichat_members_cache 1000001", "value must be between 0 and 1000000"),
    ("minichat_recent_log_bytes 10", 'invalid "minichat_recent_log_bytes" "10": must be between 1k and 1g'),
    ("minichat_ws_echo_max_message_size 65m",
     'invalid "minichat_ws_echo_max_message_size" "65m": must be between 128 and 64m'),
    ('minichat_jwt_issuer ""', 'invalid "minichat_jwt_issuer" "": must be 1 to 255 bytes'),
    ("minichat_jwt_audience " + "a" * 256, 'invalid "minichat_jwt_audience" "%s": must be 1 to 255 bytes' % ("a" * 256)),
    ('minichat_jwt_audience "a\tb"', 'must be printable ASCII'),
    ("minichat_allowed_origins https://a.example/app",
     'invalid origin "https://a.example/app" in "minichat_allowed_origins"'),
    ("minichat_allowed_origins a.example", 'invalid origin "a.example" in "minichat_allowed_origins": must start'),
    ("minichat_allowed_origins https://a.*.example", 'invalid origin "https://a.*.example"'),
    ("minichat_limit_messages rate=0r/s", 'invalid rate "rate=0r/s" in "minichat_limit_messages"'),
    ("minichat_limit_messages rate=10r/s burst=2000000",
     'invalid burst value "burst=2000000" in "minichat_limit_messages"'),
    ("minichat_limit_strikes refusals=0 window=10s", 'invalid refusals value "refusals=0"'),
    ("minichat_limit_strikes refusals=5 window=0", 'invalid window value "window=0": must be between 1s and 1d'),
    ("minichat_limit_strikes refusals=5 window=2d", 'invalid window value "window=2d": must be between 1s and 1d'),
    ("minichat_limit_bans 0", 'invalid ban duration "0": must be between 1s and 365d, or "permanent"'),
    ("minichat_limit_bans 1d 400d", 'invalid ban duration "400d"'),
    ("minichat_limit_redis_down sometimes", 'invalid value "sometimes"'),
    ("minichat_max_connections_per_ip 0",
     'invalid "minichat_max_connections_per_ip" "0": must be off or between 1 and 1000000'),
    ("minichat_max_connections_per_ip 1000001",
     'invalid "minichat_max_connections_per_ip" "1000001": must be off or between 1 and 1000000'),
    ("minichat_max_connections_per_ip many",
     'invalid "minichat_max_connections_per_ip" "many": must be off or between 1 and 1000000'),
    ("minichat_max_connections_per_ip_zone 16k",
     'invalid "minichat_max_connections_per_ip_zone" "16k": must be between 32k and 1g'),
    ("minichat_redis_timeout 100ms;\n    minichat_redis_connect_timeout 200ms",
     '"minichat_redis_connect_timeout" must not be longer than "minichat_redis_timeout"'),
]


@pytest.mark.parametrize("line,message", BAD, ids=[b[0][:40] for b in BAD])
def test_bad_value_refused(line, message):
    rc, out = OwnNginx([line]).check_config()
    assert rc != 0, out
    assert "[emerg]" in out and message in out, out


def test_values_in_range_pass():
    rc, out = OwnNginx([
        "minichat_reconnect_interval 10ms",
        "minichat_dedup_ttl 1m",
        "minichat_repair_after 0",
        "minichat_typing_interval 0",
        "minichat_flush_window 100ms busy=1000000 rate=16000",
        "minichat_redis_timeout 10m",
        "minichat_jwt_issuer https://auth.example",
        "minichat_jwt_audience minichat",
        "minichat_allowed_origins https://a.example https://*.b.example http://127.0.0.1:8080",
        "minichat_limit_strikes refusals=1 window=1d",
        "minichat_limit_bans 1s 365d permanent",
        "minichat_max_connections_per_ip 1000000",
        "minichat_max_connections_per_ip_zone 32k",
    ]).check_config()
    assert rc == 0, out
    assert "test is successful" in out, out
