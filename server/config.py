"""Settings: one msgspec struct, filled from defaults, ``VOXWIRE_*`` variables and CLI flags.

Every limit the server enforces lives here, so each is explicit and configurable.
``python -m server.config`` prints the Markdown settings table used in the README.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.config_voices import VoiceSettings
from server.cpus import MAX_PROCESS_THREADS
from server.cpus import usable_cpus as usable_cpus  # (re-exported: config.usable_cpus)
from server.rtp.policy import parse_allowlist
from server.settings_source import SettingsSource

ENV_PREFIX = "VOXWIRE_"


# Field documentation lives in the Meta so the README table is generated from the code.
_D = msgspec.Meta


class Settings(VoiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Every setting; F5-TTS's are in server/config_f5.py, the voices', languages' and
    text's in server/config_voices.py."""

    host: Annotated[str, _D(description="Address to listen on.")] = "127.0.0.1"
    port: Annotated[int, _D(ge=0, le=65535, description="TCP port (0 picks a free one).")] = 8765
    engine: Annotated[str, _D(description="Default engine for sessions that name none.")] = "piper"
    voice: Annotated[str, _D(description="Default voice of the default engine.")] = (
        "en_US-joe-medium"
    )
    replay_engine: Annotated[
        bool,
        _D(
            description="Also serve the zero-cost `replay` engine (real speech replayed "
            "instantly) for capacity benchmarks."
        ),
    ] = False
    engine_threads: Annotated[
        int,
        _D(
            ge=0,
            le=64,
            description="Chunks an engine synthesizes at once (worker threads, and as "
            "many engine processes); 0 = as many as fit the CPUs this process may use "
            "with `engine_busy_threads` each (one per CPU by default; with that 0, or "
            "`engine_isolation=thread`, `engine_process_threads` each); the zero-cost "
            "`replay` engine, whose threads only encode: one per usable CPU.",
        ),
    ] = 0
    engine_process_threads: Annotated[
        int,
        _D(
            ge=0,
            le=64,
            description="Threads each Piper process gives onnxruntime; 0 = every CPU "
            "this process may use, at most 4, so a lone sentence is made as fast as "
            "Piper makes it on its own (one thread each: about 1.7x slower first audio "
            "on 2 cores; BENCHMARKS.md). They never spin-wait: an idle spinning thread "
            "takes a core from the other processes.",
        ),
    ] = 0
    engine_busy_threads: Annotated[
        int,
        _D(
            ge=0,
            le=64,
            description="Threads of a Piper sentence that starts while the other engine "
            "processes leave no room for `engine_process_threads` more on the usable "
            "CPUs (decided per sentence); 0 = always `engine_process_threads`. A lone "
            "sentence gets every core (fast first audio); under load sentences run side "
            "by side on a core each, which makes more speech per CPU second than sharing "
            "every core (BENCHMARKS.md, issue 15). The cost is memory: an engine process "
            "per CPU, each holding its voices on two sessions (about 280 MiB warm, not 180).",
        ),
    ] = 1
    warmup: Annotated[bool, _D(description="Synthesize a short text at start-up.")] = True
    engine_isolation: Annotated[
        Literal["process", "thread"],
        _D(
            description="`process`: the engines run in supervised child processes (Piper "
            "in a pool, F5 in one generation host), so a crash or hang in one kills only "
            "that process; `thread`: in the server's own process (no isolation; for "
            "comparisons and debugging)."
        ),
    ] = "process"
    engine_spare_processes: Annotated[
        int,
        _D(
            ge=0,
            le=16,
            description="Warm engine processes kept beyond `engine_threads`, so that "
            "other sessions go on without a gap while a crashed one restarts.",
        ),
    ] = 1
    engine_deadline_s: Annotated[
        float,
        _D(
            gt=0,
            description="Engine time allowed for a chunk: this much, plus "
            "`engine_deadline_per_char_s` per character (divided by the speed); a "
            "process past it is killed and the chunk skipped with `engine_timeout`.",
        ),
    ] = 5.0
    engine_deadline_per_char_s: Annotated[
        float, _D(ge=0, description="Engine time allowed per character of a chunk.")
    ] = 0.05
    engine_start_timeout_s: Annotated[
        float, _D(gt=0, description="Time an engine process has to load and warm up.")
    ] = 120.0
    engine_max_rss_mb: Annotated[
        int,
        _D(
            ge=64,
            description="An engine process whose memory (RSS) is above this after a "
            "chunk is replaced by a fresh one (Piper's grows with long chunks: about "
            "600 MiB after a 400-character one, from 250 MiB warm).",
        ),
    ] = 768
    engine_restart_backoff_max_s: Annotated[
        float,
        _D(
            gt=0,
            description="Longest wait between restarts of an engine process that keeps "
            "failing to start (the wait doubles from 0.5 s).",
        ),
    ] = 30.0
    engine_quarantine_s: Annotated[
        float,
        _D(
            ge=0,
            description="A chunk whose text crashed or hung an engine process is "
            "refused (`text_quarantined`) for this long instead of being retried.",
        ),
    ] = 600.0
    max_sessions: Annotated[
        int, _D(ge=1, description="Concurrent WebSocket sessions; more are refused (close 1013).")
    ] = 256
    max_message_bytes: Annotated[
        int, _D(ge=1024, description="Largest client message; larger closes with 1009.")
    ] = 65536
    max_body_bytes: Annotated[
        int,
        _D(
            ge=1024,
            description="Largest HTTP request body (voice uploads: `voice_max_bytes`); a "
            "longer one is refused with 413 as it streams in, before it is read whole.",
        ),
    ] = 65536
    header_timeout_s: Annotated[
        float,
        _D(
            gt=0,
            description="Time a connection has to send a request's line and headers "
            "(from its opening, or the first byte of its next request); then it is closed.",
        ),
    ] = 10.0
    malloc_arena_max: Annotated[
        int,
        _D(
            ge=0,
            le=64,
            description="glibc malloc arenas for the server and its engine processes "
            "(0 = glibc's default of 8 per core). Buffers allocated on one thread and "
            "freed on another make RSS creep up in more arenas; 2 keeps a long-running "
            "node flat (BENCHMARKS.md, memory).",
        ),
    ] = 2
    forwarded_allow_ips: Annotated[
        str,
        _D(
            description="Comma-separated addresses (or `*`) of proxies trusted to give the "
            "client's address in X-Forwarded-For; it is then the client address for "
            "logs and per-address limits (RTP). Set it to the load balancer's address "
            "when there is one (`*` only where no client reaches the node directly).",
        ),
    ] = "127.0.0.1"
    max_buffered_chars: Annotated[
        int,
        _D(
            ge=100,
            description="Text accepted but not yet synthesized, per session; "
            "text beyond it is refused with `text_buffer_full`.",
        ),
    ] = 20000
    max_session_chars: Annotated[
        int,
        _D(
            ge=100,
            description="Text one session may send in all (every character counts, "
            "whitespace too, since all of it is journaled for resume); beyond it text is "
            "refused with `session_text_limit`.",
        ),
    ] = 200000
    max_unsent_audio_s: Annotated[
        float,
        _D(
            gt=0,
            description="Encoded audio waiting to be sent, per session, in seconds; "
            "above it the session takes no engine work.",
        ),
    ] = 4.0
    slow_consumer_timeout_s: Annotated[
        float,
        _D(
            gt=0,
            description="How long a session may stay above `max_unsent_audio_s`, or take "
            "its waiting audio slower than `slow_consumer_min_rate`, before it is closed "
            "with `slow_consumer`.",
        ),
    ] = 10.0
    slow_consumer_min_rate: Annotated[
        float,
        _D(
            ge=0,
            description="While audio waits for it, a client must take at least this many "
            "seconds of audio per second (1 = real time), measured over "
            "`slow_consumer_timeout_s`; a client that stopped reading (socket buffers "
            "full) takes none. 0 turns the check off.",
        ),
    ] = 0.5
    drain_grace_s: Annotated[
        float,
        _D(
            ge=0,
            description="On SIGTERM: how long running utterances may take to "
            "finish before their sessions are closed with 1012.",
        ),
    ] = 30.0
    close_grace_s: Annotated[
        float,
        _D(
            gt=0,
            description="How long a session being closed for an error waits for a "
            "stalled client to take the error event and the close frame.",
        ),
    ] = 5.0
    socket_send_buffer_bytes: Annotated[
        int,
        _D(
            ge=0,
            description="Kernel send buffer per WebSocket (SO_SNDBUF; 0 = kernel "
            "autotuning, which lets a stalled client park megabytes in the kernel).",
        ),
    ] = 131072
    idle_timeout_s: Annotated[
        float,
        _D(
            gt=0,
            description="Close a session after this long with no client message "
            "and no audio in flight.",
        ),
    ] = 120.0
    max_session_s: Annotated[float, _D(gt=0, description="Longest a session may last.")] = 3600.0
    start_timeout_s: Annotated[
        float, _D(gt=0, description="Time a new connection has to send `start`.")
    ] = 10.0
    opus_complexity: Annotated[int, _D(ge=0, le=10, description="Opus encoder complexity.")] = 5
    opus_application: Annotated[
        Literal["voip", "audio", "lowdelay"], _D(description="Opus application mode.")
    ] = "voip"
    opus_fec: Annotated[bool, _D(description="Opus in-band forward error correction.")] = False
    opus_packet_loss_perc: Annotated[
        int, _D(ge=0, le=100, description="Expected packet loss, % (FEC acts only when > 0).")
    ] = 0
    opus_dtx: Annotated[bool, _D(description="Opus discontinuous transmission.")] = False
    chunk_first_min_words: Annotated[
        int,
        _D(
            ge=1,
            description="The first chunk of an utterance is cut at a clause "
            "boundary once it has this many words.",
        ),
    ] = 4
    chunk_hurry_words: Annotated[
        int,
        _D(
            ge=0,
            le=100,
            description="While the engine has as much work in hand as threads, a first "
            "sentence whose end is known is cut after this many words (when three more "
            "follow), so it waits less and synthesizes faster, at the price of a phrase "
            "break; 0 never cuts.",
        ),
    ] = 5
    chunk_max_chars: Annotated[
        int, _D(ge=40, description="Hard maximum characters per engine chunk.")
    ] = 400
    ws_ping_interval_s: Annotated[
        float, _D(ge=0, description="WebSocket ping interval (0 disables pings).")
    ] = 20.0
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _D(description="Log level.")
    ] = "info"
    log_format: Annotated[Literal["json", "console"], _D(description="Log line format.")] = "json"
    static_dir: Annotated[
        str,
        _D(
            description="Folder with the demo and docs pages (empty: `static/` of the source tree)."
        ),
    ] = ""
    # -- uploaded voices (issue 4: POST /v1/voices, docs/voices.md) --
    voice_max_bytes: Annotated[
        int, _D(ge=1024, description="Largest voice upload (the audio file), in bytes.")
    ] = 10 * 1024 * 1024
    voice_min_s: Annotated[
        float, _D(gt=0, description="Shortest reference audio a voice upload may have, seconds.")
    ] = 3.0
    voice_max_s: Annotated[
        float, _D(gt=0, description="Longest reference audio a voice upload may have, seconds.")
    ] = 30.0
    voice_silence_dbfs: Annotated[
        float,
        _D(
            le=0,
            description="An upload whose loudest 10 ms is below this level (dBFS) is refused "
            "as silent.",
        ),
    ] = -50.0
    voice_target_dbfs: Annotated[
        float,
        _D(
            le=0,
            description="Uploaded references are normalised so their speech (pauses left "
            "out) has this RMS level, dBFS.",
        ),
    ] = -20.0
    voice_peak_dbfs: Annotated[
        float,
        _D(le=0, description="Normalisation never lifts an upload's peak above this, dBFS."),
    ] = -1.0
    voice_max_name_chars: Annotated[
        int, _D(ge=1, description="Longest name of an uploaded voice, characters.")
    ] = 64
    voice_max_transcript_chars: Annotated[
        int, _D(ge=1, description="Longest transcript of an uploaded voice, characters.")
    ] = 1000
    voice_max_count: Annotated[
        int, _D(ge=0, description="Uploaded voices the store may hold (0 = unlimited).")
    ] = 1000
    voice_cache_size: Annotated[
        int,
        _D(
            ge=1,
            description="Prepared uploaded voices each node keeps ready (least recently "
            "used leave; they are loaded again from the store when asked for).",
        ),
    ] = 32
    voice_preview_max_chars: Annotated[
        int, _D(ge=1, description="Longest text of `POST /v1/voices/{id}/preview`.")
    ] = 300
    voice_sharing: Annotated[
        Literal["private", "shared"],
        _D(
            description="With API keys: `private`, an uploaded voice exists only for the key "
            "that uploaded it; `shared`, every key lists and speaks with it (only its owner "
            "deletes it). Open servers share everything."
        ),
    ] = "private"
    redis_url: Annotated[
        str,
        _D(
            description="Redis URL: one Redis (`redis://host:6379/0`), a Sentinel-managed "
            "primary (`redis+sentinel://host:26379,host:26379/<service>`) or a Redis Cluster "
            "(`redis+cluster://host:6379,host:6379`); see docs/redis.md. When set, API keys, "
            "per-key limits, voices and resumable sessions are shared through it, and the "
            "server refuses to start without it."
        ),
    ] = ""
    redis_prefix: Annotated[str, _D(description="Prefix of every Redis key.")] = "voxwire:"
    redis_timeout_s: Annotated[
        float,
        _D(
            gt=0,
            description="Longest wait for a connection to Redis or for one of its replies; "
            "past it the call fails (and is retried, see `redis_retries`).",
        ),
    ] = 2.0
    redis_retries: Annotated[
        int,
        _D(
            ge=0,
            le=20,
            description="Retries of a Redis call whose connection failed or timed out, "
            "50 ms apart doubling to 500 ms: enough for a dropped connection, not for a "
            "failover, which the state-outage policy handles (docs/redis.md).",
        ),
    ] = 3
    resume_window_s: Annotated[
        float,
        _D(
            ge=0,
            description="How long a session's state outlives its connection, so the client "
            "can resume it (on any node with Redis); 0 turns resume off.",
        ),
    ] = 60.0
    replay_window_s: Annotated[
        float,
        _D(
            gt=0,
            description="Audio kept per session for replay on resume (the newest frames); "
            "a resume from an older frame is refused with `replay_unavailable`.",
        ),
    ] = 60.0
    resume_token_ttl_s: Annotated[
        float,
        _D(
            ge=0,
            description="Life of a resume token (0: the longest a session may last plus "
            "`resume_window_s`).",
        ),
    ] = 0.0
    state_write_timeout_s: Annotated[
        float,
        _D(
            gt=0,
            description="Longest a session's journal write may take; a slower (hung) state "
            "store ends resume for that session, which goes on streaming.",
        ),
    ] = 1.0
    state_check_interval_s: Annotated[
        float,
        _D(
            gt=0,
            description="How often the state store (Redis) is checked; while it does not "
            "answer, new sessions are refused with `state_unavailable` (close 1013).",
        ),
    ] = 1.0
    api_keys: Annotated[
        str,
        _D(
            description="Comma-separated API keys or `sha256:<hex>` digests (`voxwire keys "
            "new` makes one). None configured (and no Redis keys) means open access."
        ),
    ] = ""
    token_secret: Annotated[
        str,
        _D(
            description="HMAC secret for browser tokens; the same on every node "
            "(empty: random per process)."
        ),
    ] = ""
    token_max_ttl_s: Annotated[
        float, _D(gt=0, le=86400, description="Longest life of a token from POST /v1/tokens.")
    ] = 600.0
    allowed_origins: Annotated[
        str,
        _D(
            description="Comma-separated browser origins allowed to open WebSockets besides "
            "the server's own (`*` for any)."
        ),
    ] = ""
    allowed_hosts: Annotated[
        str,
        _D(
            description="Comma-separated host names the server is reached by (besides "
            "loopback names, IP addresses and `host`): a page's Origin counts as the "
            "server's own only when its Host is one of these (DNS rebinding).",
        ),
    ] = ""
    require_api_keys: Annotated[
        bool,
        _D(
            description="Never serve without an API key: with no key configured and none "
            "in Redis (emptied, or a new Redis), answer 503 `access_rules_lost`.",
        ),
    ] = False
    cors_origins: Annotated[
        str,
        _D(
            description="Comma-separated origins allowed to call the HTTP API from "
            "browsers (CORS; `*` for any)."
        ),
    ] = ""
    key_max_sessions: Annotated[
        int,
        _D(
            ge=0,
            description="Concurrent sessions (WebSocket + speech requests) per API "
            "key (0 = unlimited).",
        ),
    ] = 0
    key_requests_per_minute: Annotated[
        int,
        _D(
            ge=0,
            description="Requests (HTTP + WebSocket connections) per API key per "
            "minute (0 = unlimited).",
        ),
    ] = 0
    key_chars_per_day: Annotated[
        int, _D(ge=0, description="Characters of text per API key per UTC day (0 = unlimited).")
    ] = 0
    # -- RTP out (output.transport; server/rtp/policy.py) --
    rtp_allowed_destinations: Annotated[
        str,
        _D(
            description="Comma-separated networks (and ports) RTP may be sent to: `CIDR`, "
            "`CIDR:PORT` or `CIDR:LO-HI` (`[v6net]:LO-HI`); no port means 1024-65535. "
            "Empty: RTP output is off.",
        ),
    ] = ""
    rtp_streams_per_minute: Annotated[
        int,
        _D(
            ge=0,
            description="New RTP streams per API key (or client address) per minute "
            "(0 = unlimited).",
        ),
    ] = 30
    rtp_max_streams: Annotated[
        int, _D(ge=0, description="Concurrent RTP streams on this node (0 = unlimited).")
    ] = 100

    def engines(self) -> int:
        """``engine_threads``, with 0 resolved to as many engines as fit the usable CPUs
        with ``engine_busy_threads`` each (in engine processes; else, or with 0 there,
        ``engine_cpu_threads``), at least one: the cores are shared out under load."""
        narrow = self.engine_busy_threads if self.engine_isolation == "process" else 0
        per = narrow or self.engine_cpu_threads()
        return self.engine_threads or max(1, usable_cpus() // per)

    def engine_cpu_threads(self) -> int:
        """``engine_process_threads``, with 0 resolved to the usable CPUs, at most
        MAX_PROCESS_THREADS."""
        return self.engine_process_threads or min(usable_cpus(), MAX_PROCESS_THREADS)

    def __post_init__(self) -> None:
        parse_allowlist(self.rtp_allowed_destinations)  # a bad entry is named at start-up

        self.language_voice_map()


# Reading and documenting the settings is generic (server.settings_source); these names
# are the module's public interface (cli, tests, benchmarks).
_SOURCE = SettingsSource(Settings, ENV_PREFIX)
load_settings = _SOURCE.load
add_arguments = _SOURCE.add_arguments
settings_table = _SOURCE.table


if __name__ == "__main__":
    print(settings_table(), end="")
