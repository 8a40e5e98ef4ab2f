"""``python -m emulator``: run the emulator in the foreground until Ctrl-C (or SIGTERM).

    python -m emulator --zego-app 1234567:<server_secret>:<callback_secret> \\
        --callback-url http://127.0.0.1:8080/callbacks/zego --time-scale 60 \\
        --zego-agent-port 9101 --zego-rtc-port 9102 --coze-port 9103 \\
        --coze-token pat_full=createRoom,listVoice,chat,listMessage --coze-bot 7348293334459310001

Secrets come in on the command line (a local development tool); they are never printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from emulator.config import EmulatorConfig, ZegoAppSecrets
from emulator.server import Emulator


def _zego_app(value: str) -> tuple[int, ZegoAppSecrets]:
    app_id, sep, rest = value.partition(":")
    server_secret, sep2, callback_secret = rest.partition(":")
    if not (sep and sep2 and app_id.isdigit() and server_secret and callback_secret):
        raise argparse.ArgumentTypeError("expected APP_ID:SERVER_SECRET:CALLBACK_SECRET")
    return int(app_id), ZegoAppSecrets(server_secret=server_secret, callback_secret=callback_secret)


def _coze_token(value: str) -> tuple[str, frozenset[str]]:
    token, sep, permissions = value.partition("=")
    if not sep or not token:
        raise argparse.ArgumentTypeError("expected TOKEN=perm1,perm2")
    return token, frozenset(p for p in permissions.split(",") if p)


def parse_args(argv: Sequence[str] | None = None) -> EmulatorConfig:
    parser = argparse.ArgumentParser(prog="emulator", description="Stand-in ZEGO and Coze servers.")
    parser.add_argument(
        "--zego-app", type=_zego_app, action="append", default=[], metavar="ID:SERVER:CALLBACK"
    )
    parser.add_argument(
        "--callback-url", default=None, help="where ZEGO callbacks go (default: recorded only)"
    )
    parser.add_argument(
        "--rtc-callback-url",
        default=None,
        help="where ZEGO's RTC room callbacks go, e.g. http://127.0.0.1:8080/callbacks/zego-rtc "
        "(default: recorded only)",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="vendor seconds per real second")
    parser.add_argument("--voice-quota", type=int, default=10)
    parser.add_argument("--digital-human-quota", type=int, default=10)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--zego-agent-port", type=int, default=9101)
    parser.add_argument("--zego-rtc-port", type=int, default=9102)
    parser.add_argument("--coze-port", type=int, default=9103)
    parser.add_argument("--llm-port", type=int, default=9104)
    parser.add_argument("--coze-token", type=_coze_token, action="append", default=[], metavar="TOKEN=PERMS")
    parser.add_argument("--coze-bot", action="append", default=[])
    parser.add_argument("--no-rate-limits", action="store_true", help="do not enforce the vendor rate limits")
    args = parser.parse_args(argv)
    return EmulatorConfig(
        zego_apps=dict(args.zego_app),
        callback_url=args.callback_url,
        rtc_callback_url=args.rtc_callback_url,
        time_scale=args.time_scale,
        voice_quota=args.voice_quota,
        digital_human_quota=args.digital_human_quota,
        coze_tokens=dict(args.coze_token),
        coze_bots=frozenset(args.coze_bot),
        host=args.host,
        zego_agent_port=args.zego_agent_port,
        zego_rtc_port=args.zego_rtc_port,
        coze_port=args.coze_port,
        llm_port=args.llm_port,
        rate_limits=not args.no_rate_limits,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    emulator = Emulator(config)
    emulator.start()
    out = sys.stdout
    out.write(f"ZEGO AI Agent API  {emulator.zego_agent_url}\n")
    out.write(f"ZEGO RTC API       {emulator.zego_rtc_url}\n")
    out.write(f"Coze API           {emulator.coze_url}\n")
    out.write(f"LLM (chat)         {emulator.llm_url}/v1/chat/completions\n")
    out.write(f"Apps               {', '.join(map(str, config.zego_apps)) or '(none)'}\n")
    out.write("Ctrl-C stops.\n")
    out.flush()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # stop cleanly under a supervisor too
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
