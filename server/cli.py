"""voxwire: `serve` the server, `say` text through it, make API `keys`, get Piper `voices`,
run a `bench`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

import msgspec

from server import config
from server.allocator import cap_arenas


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server import logs
    from server.app import create_app
    from server.drain import DrainingServer
    from server.http_protocol import http_protocol
    from server.ws_protocol import ws_protocol

    overrides = {k: getattr(args, k) for k in config.Settings.__struct_fields__}
    try:
        settings = config.load_settings(overrides=overrides)
    except msgspec.ValidationError as exc:
        print(
            f"voxwire: bad setting: {exc} (flags --NAME, environment VOXWIRE_NAME)", file=sys.stderr
        )
        return 2
    logs.configure(settings.log_level, settings.log_format)
    # Before any thread or engine process starts: they inherit the cap.
    cap_arenas(settings.malloc_arena_max)
    if settings.require_api_keys and not settings.api_keys and not settings.redis_url:
        print(
            "voxwire: require_api_keys is set but there is no API key (api_keys) and no "
            "Redis (redis_url) to hold them; not starting",
            file=sys.stderr,
        )
        return 2
    if settings.redis_url:
        problem = _redis_problem(settings.redis_url)
        if problem:
            # No silent fall back to memory: nodes would stop sharing keys and limits.
            print(
                f"voxwire: cannot reach Redis at {_redact(settings.redis_url)}: {problem}; "
                "not starting (unset VOXWIRE_REDIS_URL to run without Redis)",
                file=sys.stderr,
            )
            return 2
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"voxwire: {exc}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when
    # sock.proto says TCP; without it Nagle + delayed ACK add ~40 ms to first audio.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        print(f"voxwire: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"voxwire listening on http://{shown}:{port}  "
        f"(WebSocket ws://{shown}:{port}/v1/stream, engine {settings.engine}, "
        f"voice {settings.voice})",
        flush=True,
    )
    ucfg = uvicorn.Config(
        app,
        # h11 with a deadline on the request head (uvicorn has none: slowloris)
        http=http_protocol(settings.header_timeout_s),
        # wsproto honours transport flow control: send() waits for a slow client
        # instead of buffering without bound (the websockets-sansio default does not).
        ws=ws_protocol(settings.socket_send_buffer_bytes),
        ws_max_size=settings.max_message_bytes,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ws_per_message_deflate=False,  # Opus does not compress; deflate only burns CPU
        ws_ping_interval=settings.ws_ping_interval_s or None,
        ws_ping_timeout=settings.ws_ping_interval_s or None,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(ucfg, app.state.voxwire, settings.drain_grace_s).run(sockets=[sock])
    return 0


def _redis_problem(url: str) -> str | None:
    """Why the state store at ``url`` cannot be used now (None: it answers). With a
    cluster, every primary must answer; with Sentinel, the primary they name."""
    from redis import RedisError

    from server.state.connect import redis_client

    async def ping() -> None:
        client = redis_client(url, timeout_s=3.0)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


async def _keys_in_redis(url: str, prefix: str, add: str = "", remove: str = "") -> int:
    """Add a key digest to the shared set (and mark keys required), or remove one:
    how many it changed."""
    from server.state.connect import redis_client

    client = redis_client(url)
    try:
        if add:
            n = int(await client.sadd(prefix + "api_keys", add))
            # from now on this Redis's nodes require keys, even once every key is revoked
            await client.set(prefix + "api_keys:required", 1)
            return n
        return int(await client.srem(prefix + "api_keys", remove))
    finally:
        await client.aclose()


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _keys(args: argparse.Namespace) -> int:
    import secrets

    from server.auth import digest

    if args.keys_command == "new":
        key = "vw_" + secrets.token_urlsafe(32)
        hashed = "sha256:" + digest(key)
        if args.redis_url:
            asyncio.run(_keys_in_redis(args.redis_url, args.redis_prefix, add=digest(key)))
            print(
                f"stored the key's digest in Redis ({args.redis_prefix}api_keys); nodes that "
                "have seen it refuse to serve if Redis loses it, and with "
                "VOXWIRE_REQUIRE_API_KEYS=true so do nodes started after such a loss",
                file=sys.stderr,
            )
        print(key)
        print(f"configuration form (VOXWIRE_API_KEYS): {hashed}", file=sys.stderr)
        return 0
    if args.keys_command == "hash":
        print("sha256:" + digest(args.key))
        return 0
    # revoke
    d = args.key[7:] if args.key.startswith("sha256:") else digest(args.key)
    removed = asyncio.run(_keys_in_redis(args.redis_url, args.redis_prefix, remove=d))
    print("revoked" if removed else "no such key in Redis", file=sys.stderr)
    return 0 if removed else 1


def _voices(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server.voices import piper_fetch
    from server.voices.piper_catalog import FetchError, listing

    overrides = {"piper_voices_url": args.url, "piper_voices_dir": getattr(args, "dir", None)}
    try:
        settings = config.load_settings(overrides=overrides)
    except msgspec.ValidationError as exc:
        print(f"voxwire voices: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        if args.voices_command == "list":
            catalog = piper_fetch.HttpSource(settings.piper_voices_url, args.timeout).catalog()
            print("\n".join(listing(catalog, args.language)))
            return 0
        if not settings.piper_voices_dir:
            print(
                "voxwire voices fetch: no folder to put the voices in: give --dir, or set "
                "piper_voices_dir (VOXWIRE_PIPER_VOICES_DIR)",
                file=sys.stderr,
            )
            return 2
        dest = Path(settings.piper_voices_dir).expanduser()
        if args.offline:
            piper_fetch.copy_offline(args.names, dest, Path(args.offline).expanduser())
        else:
            piper_fetch.fetch(args.names, dest, settings.piper_voices_url, args.timeout)
    except FetchError as exc:
        print(f"voxwire voices: {exc}", file=sys.stderr)
        return 1
    return 0


def _voices_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    voices = sub.add_parser("voices", help="list Piper's voices, fetch them into piper_voices_dir")
    vsub = voices.add_subparsers(dest="voices_command", required=True)
    fetch = vsub.add_parser(
        "fetch",
        help="download voices (NAME.onnx + NAME.onnx.json) into the voices folder",
        description="Download Piper voices, checked against the repository's voices.json, "
        "into the voices folder the server loads (piper_voices_dir).",
    )
    fetch.add_argument(
        "names", nargs="+", metavar="NAME", help="a voice, e.g. de_DE-thorsten-medium"
    )
    fetch.add_argument(
        "--dir",
        help="the voices folder (default: the piper_voices_dir setting, VOXWIRE_PIPER_VOICES_DIR)",
    )
    fetch.add_argument(
        "--offline",
        metavar="SRC_DIR",
        help="copy from this local folder (a copy of the repository, or NAME.onnx files) instead",
    )
    listed = vsub.add_parser("list", help="the voices the repository offers")
    listed.add_argument(
        "--language", default="", help="only these: a language (de) or locale (de_DE)"
    )
    for p in (fetch, listed):
        p.add_argument(
            "--url",
            help="the voice repository (default: the piper_voices_url setting, "
            "VOXWIRE_PIPER_VOICES_URL)",
        )
        p.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")


# ---------------------------------------------------------------------------- say


async def _text_pieces(args: argparse.Namespace) -> AsyncIterator[str]:
    if args.text:
        yield " ".join(args.text)
        return
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line


async def _say(args: argparse.Namespace, out: BinaryIO) -> int:
    from server.protocol import Error, OutputFormat
    from server.streaming.ogg import OggOpusWriter
    from voxwire.client import Audio, Session, VoxwireError, connect

    pcm = args.format == "pcm"
    output = (
        OutputFormat(encoding="pcm_s16le", sample_rate=args.sample_rate)
        if pcm
        else OutputFormat(encoding="opus", sample_rate=48000, frame_ms=20, bitrate=args.bitrate)
    )
    # several comma-separated URLs: nodes to resume on, in turn, if one goes away
    urls = [u.strip() for u in args.url.split(",") if u.strip()]
    writer: OggOpusWriter | None = None
    frames = 0

    async def feed(session: Session) -> None:
        async for piece in _text_pieces(args):
            await session.text(piece)
        await session.end()

    try:
        async with connect(
            urls, voice=args.voice, engine=args.engine, speed=args.speed or None, output=output
        ) as session:
            if not pcm:
                writer = OggOpusWriter(48000, pre_skip=session.ready.pre_skip)
                out.write(writer.headers())
            feeder = asyncio.create_task(feed(session))
            try:
                async for item in session:
                    if isinstance(item, Audio):
                        frames += 1
                        out.write(writer.packet(item.data, 960) if writer else item.data)
                    elif isinstance(item, Error):  # fatal ones raise
                        print(f"voxwire say: {item.code}: {item.message}", file=sys.stderr)
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, VoxwireError):
                    await feeder
    except VoxwireError as exc:
        what = exc.message if exc.code == "unreachable" else f"{exc.code}: {exc.message}"
        print(f"voxwire say: {what}", file=sys.stderr)
        return 1
    finally:
        if writer is not None:
            out.write(writer.finish())
        out.flush()
    if args.output not in (None, "-"):
        print(f"wrote {frames} frames to {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmarks parse their own arguments
        from loadtests.bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="voxwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="run the benchmarks (see `voxwire bench -h`, BENCHMARKS.md)")
    serve = sub.add_parser("serve", help="run the server")
    config.add_arguments(serve)
    say = sub.add_parser("say", help="speak text through a running server")
    say.add_argument("text", nargs="*", help="text to speak (default: read stdin)")
    say.add_argument("-o", "--output", help="output file (default stdout)")
    say.add_argument(
        "--url",
        default=os.environ.get("VOXWIRE_URL", "ws://127.0.0.1:8765/v1/stream"),
        help="the server's /v1/stream URL; several, comma-separated: nodes to resume on",
    )
    say.add_argument(
        "--format",
        choices=["ogg", "pcm"],
        default="ogg",
        help="ogg: Ogg Opus file; pcm: raw s16le mono",
    )
    say.add_argument("--sample-rate", type=int, default=24000, help="PCM sample rate")
    say.add_argument("--bitrate", type=int, default=None, help="Opus bitrate, bits/s")
    say.add_argument("--voice")
    say.add_argument("--engine")
    say.add_argument("--speed", type=float)
    keys = sub.add_parser("keys", help="make, hash or revoke API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    knew = ksub.add_parser("new", help="print a new API key (its digest too, on stderr)")
    khash = ksub.add_parser("hash", help="print the sha256: form of a key for VOXWIRE_API_KEYS")
    khash.add_argument("key")
    krev = ksub.add_parser("revoke", help="remove a key from Redis")
    krev.add_argument("key", help="the key or its sha256: digest")
    for p in (knew, krev):
        p.add_argument(
            "--redis-url",
            default=os.environ.get("VOXWIRE_REDIS_URL", ""),
            required=p is krev and not os.environ.get("VOXWIRE_REDIS_URL"),
            help="store the digest in this Redis (shared by every node)",
        )
        p.add_argument("--redis-prefix", default=os.environ.get("VOXWIRE_REDIS_PREFIX", "voxwire:"))
    _voices_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys":
        return _keys(args)
    if args.command == "voices":
        return _voices(args)
    if args.output in (None, "-"):
        return asyncio.run(_say(args, sys.stdout.buffer))
    with open(args.output, "wb") as out:
        return asyncio.run(_say(args, out))


if __name__ == "__main__":
    sys.exit(main())
