"""voxgate's Wyoming listener, driven by the reference client library (`wyoming` on PyPI,
the one Home Assistant uses), as Home Assistant's Wyoming integration would drive it.

Usage: wyoming_client.py HOME_PORT GUEST_PORT DATABASE GUEST_ACCOUNT
  HOME_PORT      a listener bound to a basic-tier key (speech and transcription)
  GUEST_PORT     a listener bound to a guest-tier key (no transcription scope) whose tier
                 allows 300 characters a day
  DATABASE       the server's SQLite database (to read the recorded usage)
  GUEST_ACCOUNT  the guest key's account id

Every check decodes what it receives; a failed check raises and the exit status is 1.
"""

import array
import asyncio
import math
import re
import sqlite3
import sys
import time

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

HOST = "127.0.0.1"
TIMEOUT = 120.0
SAID = "Please turn off the lights in the living room and lock the front door."


def client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient(HOST, port, connect_timeout=10, read_timeout=TIMEOUT)


async def events_until(conn: AsyncTcpClient, last: str) -> list:
    """(seconds since the call, event) for every event up to the first of type `last`."""
    start = time.monotonic()
    got = []
    while True:
        event = await conn.read_event()
        assert event is not None, f"closed before {last}: {[e.type for _, e in got]}"
        got.append((time.monotonic() - start, event))
        if Error.is_type(event.type):
            raise AssertionError(f"error event: {Error.from_event(event)}")
        if event.type == last:
            return got


def pcm_of(events: list) -> tuple:
    """The audio of `audio-chunk` events as (16-bit samples, rate), checking each format."""
    samples = array.array("h")
    rate = None
    for _, event in events:
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            assert (start.width, start.channels) == (2, 1), start
            rate = start.rate
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            assert (chunk.rate, chunk.width, chunk.channels) == (rate, 2, 1), chunk
            samples.frombytes(chunk.audio)
    assert rate, "no audio-start"
    return samples, rate


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


def words(text: str) -> list:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(reference: str, heard: str) -> float:
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / len(ref)


async def describe(port: int) -> Info:
    async with client(port) as conn:
        await conn.write_event(Describe().event())
        event = await asyncio.wait_for(conn.read_event(), TIMEOUT)
        assert event is not None and Info.is_type(event.type), event
        return Info.from_event(event)


async def check_describe(home: int, guest: int) -> None:
    info = await describe(home)
    assert len(info.tts) == 1 and info.tts[0].supports_synthesize_streaming, info.tts
    voices = {v.name: v for v in info.tts[0].voices}
    for name in ("tts-1/alloy", "tts-1-hd/alloy"):
        assert name in voices, sorted(voices)
        assert voices[name].installed and voices[name].languages, voices[name]
    assert len(info.asr) == 1 and info.asr[0].supports_transcript_streaming, info.asr
    models = [m.name for m in info.asr[0].models]
    assert "whisper-1" in models, models
    # The guest key: its tier's voices only, and no transcription.
    info = await describe(guest)
    names = sorted(v.name for v in info.tts[0].voices)
    assert names == ["tts-1/alloy", "tts-1/echo", "tts-1/nova"], names
    assert info.asr == [], info.asr
    print(f"describe: {len(voices)} voices, asr models {models}; guest sees {names}")


async def check_synthesize(home: int) -> None:
    text = " ".join(
        [
            "Good morning, the kitchen lights are now on.",
            "The weather today is mild with a light breeze.",
            "Your first meeting starts at nine thirty.",
            "Traffic on the way to the office is light.",
            "Remember to water the plants this evening.",
            "Have a pleasant and productive day.",
        ]
    )
    async with client(home) as conn:
        voice = SynthesizeVoice(name="tts-1-hd/alloy")
        # Piper loads its model on first use: load it before anything is timed.
        await conn.write_event(Synthesize(text="Ready.", voice=voice).event())
        await events_until(conn, AudioStop().event().type)
        await conn.write_event(Synthesize(text=text, voice=voice).event())
        events = await events_until(conn, AudioStop().event().type)
        await conn.write_event(Ping(text="still there").event())
        pong = await conn.read_event()
        assert Pong.is_type(pong.type) and Pong.from_event(pong).text == "still there"
    samples, rate = pcm_of(events)
    seconds = len(samples) / rate
    assert 8.0 <= seconds <= 40.0, f"{seconds:.1f} s of audio for six sentences"
    assert rms(samples) > 300, "speech, not silence"
    chunk_times = [t for t, e in events if AudioChunk.is_type(e.type)]
    stopped = events[-1][0]
    # Sentence by sentence: the first audio arrives long before the last sentence is done.
    assert chunk_times[0] < stopped / 2, (chunk_times[0], stopped)
    print(
        f"synthesize: {seconds:.1f} s of PCM at {rate} Hz in {len(chunk_times)} chunks; "
        f"first after {chunk_times[0] * 1000:.0f} ms, audio-stop after {stopped * 1000:.0f} ms"
    )


async def check_streaming(home: int) -> None:
    async with client(home) as conn:
        await conn.write_event(SynthesizeStart(voice=SynthesizeVoice(name="tts-1/echo")).event())
        await conn.write_event(SynthesizeChunk(text="The front door is locked. The back").event())
        # Audio for the completed sentence comes while the rest is still being written.
        first = await events_until(conn, AudioStop().event().type)
        assert rms(pcm_of(first)[0]) > 300
        await conn.write_event(SynthesizeChunk(text=" door is open.").event())
        full = "The front door is locked. The back door is open."
        await conn.write_event(Synthesize(text=full, voice=SynthesizeVoice(name="tts-1/echo")).event())
        await conn.write_event(SynthesizeStop().event())
        rest = await events_until(conn, SynthesizeStopped().event().type)
        samples, rate = pcm_of(rest)
        assert rms(samples) > 300 and len(samples) / rate > 0.5
        starts = sum(1 for _, e in rest if AudioStart.is_type(e.type))
        assert starts == 1, f"the repeated synthesize was spoken again ({starts} audio-starts)"
    print("streaming synthesize: audio before synthesize-stop, then synthesize-stopped")


async def check_transcribe(home: int) -> None:
    async with client(home) as conn:
        voice = SynthesizeVoice(name="tts-1-hd/alloy")
        await conn.write_event(Synthesize(text=SAID, voice=voice).event())
        speech = await events_until(conn, AudioStop().event().type)
        # As Home Assistant sends it: 16 kHz, converted by the library's own converter.
        converter = AudioChunkConverter(rate=16000, width=2, channels=1)
        await conn.write_event(Transcribe(name="whisper-1", language="en").event())
        await conn.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for _, event in speech:
            if AudioChunk.is_type(event.type):
                chunk = converter.convert(AudioChunk.from_event(event))
                await conn.write_event(chunk.event())
        await conn.write_event(AudioStop().event())
        heard = await events_until(conn, "transcript")
    kinds = [e.type for _, e in heard]
    assert kinds[0] == TranscriptStart().event().type, kinds
    assert TranscriptStop().event().type in kinds, kinds
    chunks = "".join(
        TranscriptChunk.from_event(e).text for _, e in heard if TranscriptChunk.is_type(e.type)
    )
    transcript = Transcript.from_event(heard[-1][1])
    error_rate = wer(SAID, transcript.text)
    assert error_rate <= 0.15, f"WER {error_rate:.2f}: {transcript.text!r}"
    assert chunks.strip() == transcript.text.strip(), (chunks, transcript.text)
    print(f"transcribe: {transcript.text!r} (WER {error_rate:.2f}, language {transcript.language})")


async def check_guest(guest: int, database: str, account: str) -> None:
    async with client(guest) as conn:
        await conn.write_event(Ping().event())
        assert Pong.is_type((await conn.read_event()).type)
        # No transcription scope: an error event, then the close (before any audio).
        await conn.write_event(Transcribe().event())
        event = await conn.read_event()
        assert Error.is_type(event.type), event
        assert Error.from_event(event).code == "insufficient_scope", Error.from_event(event)
        assert await conn.read_event() is None, "the connection stays open"
    async with client(guest) as conn:
        # 300 characters a day: three of these sentences fit, the fourth is refused.
        sentence = "The hallway light will switch off in five minutes unless somebody walks past it."
        assert 75 < len(sentence) <= 100, len(sentence)
        spoken = 0
        code = None
        for _ in range(4):
            await conn.write_event(Synthesize(text=sentence).event())
            event = await conn.read_event()
            if Error.is_type(event.type):
                code = Error.from_event(event).code
                break
            assert AudioStart.is_type(event.type), event
            while not AudioStop.is_type(event.type):
                event = await conn.read_event()
            spoken += 1
        assert (spoken, code) == (3, "quota_exceeded"), (spoken, code)
    now = int(time.time())
    for _ in range(100):
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT used, reserved FROM quota_usage WHERE subject = ? AND metric = 'characters' AND window_start = ?",
                (f"acct:{account}", now - now % 86400),
            ).fetchone()
        if row and row[1] == 0:
            break
        await asyncio.sleep(0.1)
    assert row == (len(sentence) * 3, 0), row
    print(f"guest: transcription refused (insufficient_scope); quota_exceeded after 3 sentences, {row[0]} characters recorded")


async def main() -> None:
    home, guest, database, account = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    await check_describe(home, guest)
    await check_synthesize(home)
    await check_streaming(home)
    await check_transcribe(home)
    await check_guest(guest, database, account)
    print("wyoming client: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
