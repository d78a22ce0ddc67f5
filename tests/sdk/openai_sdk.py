"""The official openai SDK, unmodified, against a running voxgate (base URL as argv[1])."""
import io
import os
import subprocess
import sys
import tempfile
import wave

import openai

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

print("openai SDK: speech, streaming, models, transcription (also streamed), translation and errors ok")
