"""The official openai SDK, unmodified, against a running voxgate (base URL as argv[1])."""
import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import wave

import openai
import websockets.sync.client

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key=os.environ["VOXGATE_TEST_KEY"], max_retries=0)

# audio.speech.create: the whole file.
response = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there. This is voxgate.", response_format="wav")
data = response.read()
with wave.open(io.BytesIO(data)) as w:
    assert w.getframerate() == 24000, w.getframerate()
    assert w.getnchannels() == 1
assert len(data) > 24000, len(data)

# with_streaming_response: chunks as they arrive.
chunks = []
with client.audio.speech.with_streaming_response.create(
    model="tts-1", voice="nova", input="One. Two. Three. Four.", response_format="mp3"
) as streamed:
    assert streamed.headers["content-type"] == "audio/mpeg"
    for chunk in streamed.iter_bytes():
        chunks.append(chunk)
mp3 = b"".join(chunks)
assert mp3[:2] == b"\xff\xf3" or mp3[:2] == b"\xff\xf2" or mp3[:3] == b"ID3", mp3[:4]

# Models through the SDK.
ids = [m.id for m in client.models.list()]
assert "tts-1" in ids, ids

# An error surfaces as the SDK's typed exception, parsed from the envelope.
try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="x", speed=9)
except openai.BadRequestError as e:
    assert e.code == "invalid_value", e.body
    assert e.param == "speed", e.body
else:
    raise AssertionError("speed 9 was accepted")

# A wrong key is refused with the SDK's typed 401.
bad = openai.OpenAI(base_url=base_url, api_key="vg_wrong", max_retries=0)
try:
    bad.models.list()
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e.body
else:
    raise AssertionError("a wrong key was accepted")

# Transcription through the SDK: the WAV the server just spoke, back to text.
spoken = client.audio.speech.create(
    model="tts-1", voice="alloy", input="Hello there. This is a test.", response_format="wav"
).read()
transcript = client.audio.transcriptions.create(
    model="whisper-1", file=("hello.wav", spoken, "audio/wav"), language="en"
)
assert "hello" in transcript.text.lower(), transcript.text
srt = client.audio.transcriptions.create(
    model="whisper-1", file=("hello.wav", spoken, "audio/wav"), response_format="srt"
)
assert " --> " in srt, srt
verbose = client.audio.transcriptions.create(
    model="whisper-1",
    file=("hello.wav", spoken, "audio/wav"),
    response_format="verbose_json",
    timestamp_granularities=["word"],
)
assert verbose.words and verbose.words[0].end >= verbose.words[0].start, verbose

# Streaming transcription: ~40 s of speech, so Whisper's 30-second windows make at least two
# deltas, which arrive before `transcript.text.done` and add up to its text.
paragraph = (
    "The quick brown fox jumps over the lazy dog. A gateway should check every request "
    "before it reaches the engine. Speech synthesis turns written text into sound. "
)
long_speech = client.audio.speech.create(
    model="tts-1", voice="alloy", input=paragraph * 4, response_format="wav"
).read()
events = list(
    client.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", long_speech, "audio/wav"), language="en", stream=True
    )
)
kinds = [e.type for e in events]
assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.delta") >= 2, kinds
assert "".join(e.delta for e in events[:-1]) == events[-1].text, events
assert "fox" in events[-1].text.lower(), events[-1].text
assert events[-1].usage.seconds > 30, events[-1].usage

# chunking_strategy: voice activity detection, as "auto" and as a server_vad object (the SDK
# sends its members as chunking_strategy[type] and so on).
for chunking in ("auto", {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 600}):
    chunked = client.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", long_speech, "audio/wav"), language="en",
        chunking_strategy=chunking,
    )
    assert "fox" in chunked.text.lower() and "engine" in chunked.text.lower(), chunked.text

# Translation: French speech (espeak-ng, slowly: Whisper base renders robotic speech poorly)
# comes back as English.
with tempfile.TemporaryDirectory() as tmp:
    french = os.path.join(tmp, "fr.wav")
    subprocess.run(
        ["espeak-ng", "-v", "fr", "-s", "105", "-w", french, "Je m'appelle Marie. J'habite à Paris."],
        check=True,
    )
    with open(french, "rb") as f:
        translation = client.audio.translations.create(model="whisper-1", file=f)
assert "my name is" in translation.text.lower(), translation.text

try:
    client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"\x7fELF" + b"\0" * 64))
except openai.APIStatusError as e:
    assert e.status_code == 415 and e.code == "unsupported_media_type", e.body
else:
    raise AssertionError("an ELF file named .wav was accepted")

# Realtime transcription through the SDK's realtime client (GET /v1/realtime?intent=
# transcription): two Piper sentences with silence between them, in 20 ms chunks at
# real-time pace. Server VAD makes them two items, the first delta arrives before the audio
# ends, and each transcript is within 15 % word error rate.
said = [
    "A small brown fox ran across the green field and jumped over the old wooden fence.",
    "Please remember to water the plants in the kitchen every morning before you go to work.",
]


def words(text):
    return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()


def wer(reference, hypothesis):
    a, b = words(reference), words(hypothesis)
    row = list(range(len(b) + 1))
    for i, wa in enumerate(a):
        prev, row[0] = row[0], i + 1
        for j, wb in enumerate(b):
            prev, row[j + 1] = row[j + 1], min(row[j + 1] + 1, row[j] + 1, prev + (wa != wb))
    return row[len(b)] / max(len(a), 1)


def silence(secs):
    return b"\0\0" * int(24000 * secs)


pcm = silence(0.5)
for sentence in said:
    pcm += client.audio.speech.create(
        model="tts-1-hd", voice="alloy", input=sentence, response_format="pcm"
    ).read()
    pcm += silence(1.5)

with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
    created = conn.recv()
    assert created.type == "session.created", created
    conn.session.update(session={
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
        }},
    })
    received = []
    finished = threading.Event()

    def read_events():
        completed = 0
        for event in conn:
            received.append((time.monotonic(), event))
            if event.type == "error":
                break
            if event.type == "conversation.item.input_audio_transcription.completed":
                completed += 1
                if completed == len(said):
                    break
        finished.set()

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    started = time.monotonic()
    chunk = 960  # 20 ms of 24 kHz 16-bit audio
    for n, at in enumerate(range(0, len(pcm), chunk)):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[at:at + chunk]).decode())
        time.sleep(max(0.0, started + (n + 1) * 0.02 - time.monotonic()))
    audio_ended = time.monotonic()
    assert finished.wait(180), [e.type for _, e in received]

kinds = [e.type for _, e in received]
assert "error" not in kinds, received
assert kinds.count("input_audio_buffer.speech_started") == 2, kinds
completed = [e for _, e in received if e.type == "conversation.item.input_audio_transcription.completed"]
assert len({e.item_id for e in completed}) == 2, completed
for sentence, item in zip(said, completed):
    assert wer(sentence, item.transcript) <= 0.15, (sentence, item.transcript)
    assert item.usage.type == "duration" and item.usage.seconds > 2, item.usage
first_delta = next(at for at, e in received if e.type == "conversation.item.input_audio_transcription.delta")
assert first_delta < audio_ended, "the first turn was transcribed only after the audio ended"

# An ephemeral client secret, minted through the SDK, opens a session the way a browser
# does: in Sec-WebSocket-Protocol, never in the URL, with the configuration it was minted with.
secret = client.realtime.client_secrets.create(
    expires_after={"anchor": "created_at", "seconds": 60},
    session={"type": "transcription", "audio": {"input": {"turn_detection": None}}},
)
assert secret.value.startswith("ek_") and secret.expires_at > time.time(), secret
ws_url = base_url.replace("http://", "ws://").rstrip("/") + "/realtime?intent=transcription"
with websockets.sync.client.connect(
    ws_url,
    subprotocols=["realtime", "openai-insecure-api-key." + secret.value],
    origin="http://localhost:3000",
) as ws:
    assert ws.subprotocol == "realtime", ws.subprotocol
    created = json.loads(ws.recv(timeout=10))
    assert created["type"] == "session.created", created
    assert created["session"]["audio"]["input"]["turn_detection"] is None, created
    spoken = pcm[: 24000 * 2 * 4]
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(spoken).decode()}))
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    while True:
        event = json.loads(ws.recv(timeout=120))
        assert event["type"] != "error", event
        if event["type"] == "conversation.item.input_audio_transcription.completed":
            assert "fox" in event["transcript"].lower(), event
            break

print("openai SDK: speech, streaming, models, transcription (also streamed), translation, realtime and errors ok")
